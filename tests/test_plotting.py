"""Figures: each returns a Figure, writes a non-empty PNG, validates shapes, leaks no pyplot state."""
import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.stats import norm

from probgen import plotting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_pyplot_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def _mosaic(fig):
    (ax,) = fig.axes
    (im,) = ax.get_images()
    return np.asarray(im.get_array())


def test_image_grid(tmp_path):
    imgs = np.random.default_rng(0).random((10, 8, 8))
    fig = plotting.image_grid(imgs, nrow=2, title="samples", path=tmp_path / "grid.png")
    assert isinstance(fig, Figure)
    _check_png(tmp_path / "grid.png")
    m = _mosaic(fig)
    assert m.shape == (2 * 8 + 3, 5 * 8 + 6)  # 2 rows x 5 columns, 1-pixel padding
    np.testing.assert_array_equal(m[1:9, 1:9], imgs[0])
    np.testing.assert_array_equal(m[10:18, 1 + 4 * 9:9 + 4 * 9], imgs[9])  # row-major: last cell
    flat = plotting.image_grid(imgs.reshape(10, 64), image_shape=(8, 8))
    assert _mosaic(flat).shape == (4 * 8 + 5, 3 * 8 + 4)  # default: ceil(sqrt(10)) = 4 rows, 3 columns


def test_image_grid_validates_shapes():
    with pytest.raises(ValueError, match="image_shape"):
        plotting.image_grid(np.zeros((4, 64)))
    with pytest.raises(ValueError, match="needs 63"):
        plotting.image_grid(np.zeros((4, 64)), image_shape=(7, 9))
    with pytest.raises(ValueError, match="2 or 3-D"):
        plotting.image_grid(np.zeros(64))
    with pytest.raises(ValueError, match="NaN"):
        plotting.image_grid(np.full((1, 2, 2), np.nan))
    with pytest.raises(ValueError, match="nrow"):
        plotting.image_grid(np.zeros((4, 2, 2)), nrow=0)


def test_latent_grid_is_the_gaussian_quantile_grid():
    n = 7
    Z = plotting.latent_grid(n)
    g = norm.ppf(np.arange(1, n + 1) / (n + 1))  # linspace(0, 1, n + 2) without its ends
    assert Z.shape == (n * n, 2)
    np.testing.assert_allclose(Z[:n, 0], g, rtol=0, atol=1e-12)  # top row: z1 left to right
    np.testing.assert_allclose(Z[::n, 1], g[::-1], rtol=0, atol=1e-12)  # first column: z2 top to bottom
    np.testing.assert_allclose(norm.cdf(Z), np.stack(np.meshgrid(np.arange(1, n + 1) / (n + 1),
                                                                 np.arange(n, 0, -1) / (n + 1)), -1).reshape(-1, 2))


def test_latent_manifold_places_each_decoding_in_its_cell(tmp_path):
    n, h, w = 5, 3, 4
    seen = []

    def decode(Z):
        seen.append(Z.copy())
        # each image is constant = Phi(z1) + 10 * Phi(z2), so its cell can be read back
        v = norm.cdf(Z[:, 0]) + 10 * norm.cdf(Z[:, 1])
        return np.repeat(v[:, None], h * w, axis=1)

    fig = plotting.latent_manifold(decode, n=n, image_shape=(h, w), vmin=None, vmax=None,
                                   path=tmp_path / "manifold.png")
    _check_png(tmp_path / "manifold.png")
    np.testing.assert_array_equal(seen[0], plotting.latent_grid(n))
    m = _mosaic(fig)
    assert m.shape == (n * h, n * w)
    u = np.arange(1, n + 1) / (n + 1)
    for i in range(n):
        for j in range(n):
            np.testing.assert_allclose(m[i * h:(i + 1) * h, j * w:(j + 1) * w], u[j] + 10 * u[n - 1 - i])
    # (N, H, W) output is accepted too
    plotting.latent_manifold(lambda Z: np.zeros((len(Z), h, w)), n=n, image_shape=(h, w))


def test_latent_manifold_validates_decoder_output():
    with pytest.raises(ValueError, match=r"expected \(400, H\*W\)"):
        plotting.latent_manifold(lambda Z: np.zeros((10, 784)))
    with pytest.raises(ValueError, match="needs 784"):
        plotting.latent_manifold(lambda Z: np.zeros((len(Z), 64)))
    with pytest.raises(TypeError, match="callable"):
        plotting.latent_manifold(np.zeros((400, 784)))


def test_reconstructions(tmp_path):
    rng = np.random.default_rng(1)
    x, r = rng.random((13, 64)), rng.random((13, 64))
    fig = plotting.reconstructions(x, r, image_shape=(8, 8), ncol=10, path=tmp_path / "rec.png")
    _check_png(tmp_path / "rec.png")
    m = _mosaic(fig)
    assert m.shape == (4 * 8 + 5, 10 * 8 + 11)  # two blocks of (original row, reconstruction row)
    np.testing.assert_array_equal(m[1:9, 1:9], x[0].reshape(8, 8))
    np.testing.assert_array_equal(m[10:18, 1:9], r[0].reshape(8, 8))
    np.testing.assert_array_equal(m[19:27, 1 + 2 * 9:9 + 2 * 9], x[12].reshape(8, 8))
    np.testing.assert_array_equal(m[28:36, 1 + 2 * 9:9 + 2 * 9], r[12].reshape(8, 8))
    with pytest.raises(ValueError, match="same shape"):
        plotting.reconstructions(x, r[:5], image_shape=(8, 8))


def test_curves(tmp_path):
    fig = plotting.curves({"train ELBO": [-120.0, -100.0, -95.0], "valid": ([2, 4], [-110.0, -99.0]),
                           "EM": np.array([-3.0, np.nan, -1.0])},
                          xlabel="epoch", ylabel="nats", title="training", path=tmp_path / "c.png")
    _check_png(tmp_path / "c.png")
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["train ELBO", "valid", "EM"]
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines[1].get_xdata(), [2, 4])
    with pytest.raises(ValueError, match="non-empty"):
        plotting.curves({})
    with pytest.raises(ValueError, match="'a'.*1-D"):
        plotting.curves({"a": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="x has shape"):
        plotting.curves({"a": ([1, 2, 3], [1.0, 2.0])})


def test_bic_curve(tmp_path):
    ks = [1, 2, 3, 4]
    fig = plotting.bic_curve(ks, [10.0, 4.0, 5.0, 7.0], [9.0, 3.0, 3.5, 4.0], path=tmp_path / "bic.png")
    _check_png(tmp_path / "bic.png")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["BIC", "min BIC at K=2", "AIC"]
    with pytest.raises(ValueError, match="bic_values has shape"):
        plotting.bic_curve(ks, [1.0, 2.0])
    with pytest.raises(ValueError, match="aic_values has shape"):
        plotting.bic_curve(ks, [1.0, 2.0, 3.0, 4.0], [1.0])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        plotting.bic_curve(ks, [1.0, 2.0, 3.0, 4.0], path=tmp_path / "nowhere" / "b.png")
