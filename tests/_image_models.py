"""Checks shared by the tests of the image autoregressive models (PixelCNN, PixelRNN)."""
import numpy as np
import pytest

from probgen._validation import NotFittedError


def images(levels, n, shape, seed=1):
    """``n`` random images of ``shape`` with integer values in ``0 .. levels-1``."""
    return np.random.default_rng(seed).integers(0, levels, (n,) + tuple(shape))


def check_save_and_load(m, cls, shape, tmp_path):
    """One epoch of training, save, load: the same scores, history and configuration; a truncated file
    is a clear ``ValueError``."""
    m.fit(images(m.levels, 6, shape), epochs=1, batch_size=3, progress=False)
    path = tmp_path / "model.npz"
    m.save(path)
    back = cls.load(path)
    X = images(m.levels, 4, shape, seed=9)
    np.testing.assert_array_equal(back.score_samples(X), m.score_samples(X))
    assert back.history_ == m.history_ and back._config() == m._config()
    (tmp_path / "bad.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError):
        cls.load(tmp_path / "bad.npz")


def check_bad_images(cls, m):
    """The errors every image model gives; ``m`` is a built model of 3x3 images with 3 levels."""
    with pytest.raises(NotFittedError):
        cls((3, 3)).score_samples(np.zeros((1, 3, 3), int))
    with pytest.raises(NotFittedError):
        cls((3, 3)).sample(2)
    with pytest.raises(ValueError, match="levels"):
        cls((3, 3), levels=1)
    with pytest.raises(TypeError, match="image_shape"):
        cls(9)
    with pytest.raises(ValueError, match=r"0\.\.2"):
        m.score_samples(np.full((1, 3, 3), 3))
    with pytest.raises(ValueError, match=r"0\.\.2"):
        m.loss_and_grads(np.full((1, 3, 3), -1))
    with pytest.raises(ValueError, match=r"\(N, 3, 3\)"):
        m.score_samples(np.zeros((1, 3, 4), int))
    with pytest.raises(ValueError, match="NaN"):
        m.conditional_logits(np.full((1, 3, 3), np.nan))
    with pytest.raises(ValueError, match="fractions"):
        m.fit(np.full((2, 3, 3), 0.5), progress=False)
    with pytest.raises(ValueError, match="n must be"):
        m.sample(0)
