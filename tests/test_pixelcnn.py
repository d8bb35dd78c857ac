"""probgen.models.PixelCNN: gradients (finite differences, torch autograd), whole-model causality,
exact normalisation by enumeration, sampling against the model's own conditionals, training,
reproducibility, dtype, persistence and bad input."""
import itertools

import numpy as np
import pytest
from _image_models import check_bad_images, check_save_and_load
from _image_models import images as _images
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from probgen.kernels.masked_conv import conv_mask, unpack_masked_weight
from probgen.models.pixelcnn import PixelCNN, layer_specs
from probgen.nn.gradcheck import gradcheck, relative_error


def _model(shape=(4, 5), channels=6, n_layers=2, levels=2, kernel_size=3, first_kernel_size=3, seed=0,
           dtype=np.float64, bias_seed=7):
    """A built model with non-zero biases (zero biases put pixel (0, 0) exactly on a ReLU kink)."""
    m = PixelCNN(shape, channels=channels, n_layers=n_layers, kernel_size=kernel_size,
                 first_kernel_size=first_kernel_size, levels=levels, rng=seed, dtype=dtype).build()
    r = np.random.default_rng(bias_seed)
    for name, p in m.named_parameters().items():
        if name.endswith(".b"):
            p[...] = 0.5 * r.standard_normal(p.shape)
    return m


def _all_images(levels, shape):
    D = shape[0] * shape[1]
    return np.array(list(itertools.product(range(levels), repeat=D))).reshape((-1,) + tuple(shape))


# ----------------------------------------------------------------------------- torch twin
def _torch_loss_and_grads(model, X, torch):
    """The same network in torch (float64 autograd) from the model's weights."""
    F = torch.nn.functional
    P = {k: torch.tensor(unpack_masked_weight(v, mask) if k.endswith(".W") else v, requires_grad=True)
         for name, _, _, _, mask in model._layers() for k, v in model.named_parameters().items()
         if k.rsplit(".", 1)[0] == name}
    masks = {name: torch.tensor(conv_mask(k, mask)) for name, _, _, k, mask in model._layers()}

    def conv(name, h):
        W = P[name + ".W"]
        return F.conv2d(h, W * masks[name], P[name + ".b"], padding=W.shape[-1] // 2)

    L = model.levels
    x = torch.tensor(2.0 * X[:, None] / (L - 1) - 1.0)
    h = conv("input", x)
    for l in range(model.n_layers):
        p = f"res{l}"
        h = h + conv(p + ".out", F.relu(conv(p + ".conv", F.relu(conv(p + ".in", F.relu(h))))))
    logits = conv("out2", F.relu(conv("out1", F.relu(h))))
    N = X.shape[0]
    if L == 2:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor(X, dtype=torch.float64),
                                                  reduction="sum") / N
    else:
        loss = F.cross_entropy(logits, torch.tensor(X, dtype=torch.long), reduction="sum") / N
    loss.backward()
    return loss.item(), {k: v.grad.numpy() for k, v in P.items()}


@pytest.mark.parametrize("levels", [2, 5])
def test_loss_and_grads_match_torch_autograd(levels):
    from _require import require_torch
    torch = require_torch()
    m = _model(levels=levels, first_kernel_size=5)
    X = _images(levels, 4, (4, 5))
    loss, grads = m.loss_and_grads(X)
    t_loss, t_grads = _torch_loss_and_grads(m, X, torch)
    assert abs(loss - t_loss) <= 1e-12 * abs(t_loss)
    masks = {name: conv_mask(k, mask) for name, _, _, k, mask in m._layers()}
    for k, g in grads.items():
        tg = t_grads[k]
        if k.endswith(".W"):
            assert np.all(tg * (1 - masks[k[:-2]]) == 0)  # masked taps get no gradient in torch either
            g = unpack_masked_weight(g, "A" if k == "input.W" else "B")
        assert g.shape == tg.shape
        assert relative_error(g, tg) <= 1e-8, k
    assert all(np.any(g != 0) for g in grads.values())  # no dead layer hides a wrong gradient


@pytest.mark.parametrize("levels", [2, 5])
@pytest.mark.parametrize("winograd", [False, True])
def test_chunked_network_matches_torch_and_the_single_chunk(monkeypatch, levels, winograd):
    """The network runs image chunk by image chunk, and with several BLAS threads on as many threads of its
    own (contiguous image ranges, weight gradients summed over them): every chunking (1 image, 2 + 2 + 1
    with a remainder, the whole batch) and every split (2 or 3 workers) gives torch's loss and gradients,
    and the same logits, scores and gradients as the single chunk.  With ``winograd`` the residual blocks'
    3x3 layers run Winograd's F(2,3) + F(2,2) (an even width, and the channel threshold lowered to 1)."""
    from _require import require_torch
    torch = require_torch()
    import probgen.kernels.masked_conv as mc
    import probgen.models.pixelcnn as pc
    shape = (4, 6) if winograd else (4, 5)
    monkeypatch.setattr(mc, "_WINOGRAD_MIN_CHANNELS", 1 if winograd else 16)
    m = _model(shape=shape, levels=levels, first_kernel_size=5)
    assert (pc._winograd_weights(m.named_parameters(), 2, shape[1]) is not None) == winograd
    X = _images(levels, 5, shape)
    t_loss, t_grads = _torch_loss_and_grads(m, X, torch)
    per_image = 6 * shape[0] * shape[1] * 8  # C * H * W * itemsize
    results = []
    cases = [(1, 10 ** 9, 5), (1, per_image, 1), (1, 2 * per_image, 2), (2, per_image, 1), (2, 10 ** 9, 5),
             (3, 2 * per_image, 2)]
    for threads, budget, images in cases:
        monkeypatch.setattr(pc, "blas_threads", lambda: threads)
        monkeypatch.setattr(pc, "_CHUNK_BYTES", budget)
        assert pc._workers(5) == threads
        assert pc._images_per_chunk(5, 6, shape[0] * shape[1], 8) == images
        loss, grads = m.loss_and_grads(X)
        assert abs(loss - t_loss) <= 1e-12 * abs(t_loss)
        for k, g in grads.items():
            tg = t_grads[k]
            g = unpack_masked_weight(g, "A" if k == "input.W" else "B") if k.endswith(".W") else g
            assert relative_error(g, tg) <= 1e-8, (budget, k)
        results.append((loss, grads, m.conditional_logits(X), m.score_samples(X)))
    loss0, grads0, logits0, scores0 = results[0]
    for loss, grads, logits, scores in results[1:]:
        assert abs(loss - loss0) <= 1e-14 * abs(loss0)
        assert max(relative_error(grads[k], grads0[k]) for k in grads0) <= 1e-13
        np.testing.assert_allclose(logits, logits0, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(scores, scores0, rtol=1e-13)


@pytest.mark.parametrize("blas", [True, False])
def test_winograd_blocks_at_the_default_threshold_match_torch(monkeypatch, blas):
    """32 channels (16 in the 3x3 layers, the threshold) on an even width: the model runs Winograd there,
    through NumPy's CBLAS from compiled code or (``blas=False``, as where NumPy has none) through matmul."""
    from _require import require_torch
    torch = require_torch()
    import probgen.kernels._winograd as wg
    import probgen.models.pixelcnn as pc
    if not blas:
        monkeypatch.setattr(wg, "_cblas_gemm", lambda dtype: None)
    m = _model(shape=(4, 4), channels=32, n_layers=2, levels=2, first_kernel_size=5)
    assert pc._winograd_weights(m.named_parameters(), 2, 4) is not None
    X = _images(2, 3, (4, 4))
    loss, grads = m.loss_and_grads(X)
    t_loss, t_grads = _torch_loss_and_grads(m, X, torch)
    assert abs(loss - t_loss) <= 1e-12 * abs(t_loss)
    for k, g in grads.items():
        g = unpack_masked_weight(g, "A" if k == "input.W" else "B") if k.endswith(".W") else g
        assert relative_error(g, t_grads[k]) <= 1e-8, k


def test_saved_activations_do_not_leak_between_training_and_evaluation():
    """Evaluation passes (no tape) use their own buffers: scoring between two training steps changes nothing."""
    m = _model(levels=3)
    X, Y = _images(3, 4, (4, 5)), _images(3, 7, (4, 5), seed=5)
    loss, grads = m.loss_and_grads(X)
    m.score_samples(Y)
    m.conditional_logits(Y[:2])
    loss2, grads2 = m.loss_and_grads(X)
    assert loss2 == loss and all(np.array_equal(grads[k], grads2[k]) for k in grads)


@pytest.mark.parametrize("levels, n_layers", [(2, 1), (3, 1), (2, 0)])
def test_loss_and_grads_match_finite_differences(levels, n_layers):
    m = _model(shape=(3, 4), channels=4, n_layers=n_layers, levels=levels)
    X = _images(levels, 3, (3, 4))
    report = gradcheck(lambda: m.loss_and_grads(X), m.named_parameters(), eps=1e-4, order=4, rng=0, rtol=1e-8,
                       elementwise_max=40)
    assert report.passed


# ----------------------------------------------------------------------------- causality
@settings(max_examples=25)
@given(st.integers(2, 5), st.integers(2, 5), st.sampled_from([2, 3]), st.sampled_from([1, 3, 5]),
       st.sampled_from([3, 5]), st.integers(0, 2), st.integers(0, 2**16))
def test_conditional_at_t_ignores_pixels_from_t_on(H, W, levels, k, k1, n_layers, seed):
    m = _model((H, W), channels=4, n_layers=n_layers, levels=levels, kernel_size=k, first_kernel_size=k1,
               seed=seed % 97, bias_seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, levels, (3, H, W))
    t = int(rng.integers(H * W))
    Y = X.reshape(3, -1).copy()
    Y[:, t:] = rng.integers(0, levels, Y[:, t:].shape)  # change pixels t, t+1, ...
    Y = Y.reshape(X.shape)
    before = m.conditional_logits(X).reshape(3, H * W, -1)
    after = m.conditional_logits(Y).reshape(3, H * W, -1)
    np.testing.assert_array_equal(before[:, :t + 1], after[:, :t + 1])  # pixels 0..t see only x_<t


def test_conditionals_do_depend_on_the_past():
    """The causality test is not vacuous: changing pixel t moves later conditionals."""
    m = _model((4, 4), levels=2)
    X = _images(2, 1, (4, 4))
    Y = X.copy()
    Y[0, 1, 1] = 1 - Y[0, 1, 1]
    diff = (m.conditional_logits(X) != m.conditional_logits(Y)).reshape(-1)
    assert not diff[:6].any() and diff[6]  # pixel 5 changed; pixel 6 is its right neighbour


# ----------------------------------------------------------------------------- exact likelihood
@pytest.mark.parametrize("levels, shape", [(2, (3, 3)), (3, (2, 2))])
def test_probabilities_sum_to_one_over_all_images(levels, shape):
    m = _model(shape, levels=levels)
    log_p = m.score_samples(_all_images(levels, shape))
    assert log_p.shape == (levels ** (shape[0] * shape[1]),)
    assert abs(np.exp(log_p).sum() - 1.0) <= 1e-12


@pytest.mark.parametrize("levels", [2, 4])
def test_score_samples_is_the_sum_of_the_conditionals(levels):
    m = _model(levels=levels)
    X = _images(levels, 5, (4, 5))
    logits = m.conditional_logits(X)
    if levels == 2:
        assert logits.shape == X.shape
        log_cond = np.where(X == 1, -np.logaddexp(0, -logits), -np.logaddexp(0, logits))
    else:
        assert logits.shape == X.shape + (levels,)
        log_sm = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        log_cond = np.take_along_axis(log_sm, X[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(m.score_samples(X), log_cond.reshape(5, -1).sum(axis=1), rtol=1e-12)
    loss, _ = m.loss_and_grads(X)
    assert abs(loss + m.score(X)) <= 1e-12 * abs(loss)


@pytest.mark.parametrize("levels, shape", [(2, (2, 2)), (3, (1, 2))])
def test_sampling_matches_the_model_distribution(levels, shape):
    m = _model(shape, levels=levels, n_layers=1)
    all_x = _all_images(levels, shape)
    p = np.exp(m.score_samples(all_x))
    S = m.sample(6000, rng=11)
    assert S.shape == (6000,) + shape and S.dtype == np.uint8 and S.max() < levels
    index = (S.reshape(6000, -1) * levels ** np.arange(S[0].size)[::-1]).sum(axis=1)  # lexicographic code
    counts = np.bincount(index, minlength=len(p))
    _, pvalue = stats.chisquare(counts, 6000 * p)
    assert pvalue > 1e-3


# ----------------------------------------------------------------------------- training, seeds, dtype
def _digits(n=160):
    from probgen.datasets import load_digits
    d = load_digits()
    return d.binary[:n].reshape(-1, 8, 8), d.levels[:n].reshape(-1, 8, 8)


@pytest.mark.parametrize("levels", [2, 17])
def test_training_lowers_the_loss_and_is_reproducible(levels):
    binary, grey = _digits()
    X = binary if levels == 2 else grey
    kw = dict(channels=8, n_layers=1, levels=levels, first_kernel_size=5, rng=3)
    m = PixelCNN((8, 8), **kw).build()
    before = -m.score(X)
    m.fit(X[:128], epochs=3, batch_size=32, lr=3e-3, validation=X[128:], progress=False)
    h = m.history_
    assert h["epoch"] == [1, 2, 3] and len(h["validation_nll"]) == 3
    assert h["train_nll"][-1] < h["train_nll"][0] and -m.score(X) < before
    assert abs(h["validation_nll"][-1] + m.score(X[128:])) <= 1e-9 * h["validation_nll"][-1]
    again = PixelCNN((8, 8), **kw).fit(X[:128], epochs=3, batch_size=32, lr=3e-3, validation=X[128:],
                                        progress=False)
    assert again.history_ == h
    for k, v in m.named_parameters().items():
        np.testing.assert_array_equal(v, again.named_parameters()[k])
    other = PixelCNN((8, 8), **{**kw, "rng": 4}).build()
    assert not np.array_equal(other.named_parameters()["input.W"], PixelCNN((8, 8), **kw).build()
                              .named_parameters()["input.W"])


def test_samples_are_reproducible_for_a_seed():
    m = _model((3, 4), levels=3)
    np.testing.assert_array_equal(m.sample(5, rng=1), m.sample(5, rng=1))
    assert not np.array_equal(m.sample(20, rng=1), m.sample(20, rng=2))


def test_float32_is_kept_end_to_end():
    m64 = _model(levels=4)
    m32 = _model(levels=4, dtype=np.float32)
    X = _images(4, 3, (4, 5))
    loss32, g32 = m32.loss_and_grads(X)
    loss64, g64 = m64.loss_and_grads(X)
    assert all(p.dtype == np.float32 for p in m32.named_parameters().values())
    assert all(g.dtype == np.float32 for g in g32.values())
    assert m32.score_samples(X).dtype == np.float32 and m32.conditional_logits(X).dtype == np.float32
    assert abs(loss32 - loss64) <= 1e-5 * loss64
    assert max(relative_error(g32[k], g64[k]) for k in g64) < 1e-4
    m32.fit(X, epochs=1, batch_size=2, progress=False)
    assert all(p.dtype == np.float32 for p in m32.named_parameters().values())


# ----------------------------------------------------------------------------- structure, persistence
def test_parameters_are_named_live_and_packed():
    m = PixelCNN((5, 5), channels=8, n_layers=2, levels=17, rng=0).build()
    params = m.named_parameters()
    assert params["input.W"].shape == (8, 1, 24) and params["res0.conv.W"].shape == (4, 4, 5)
    assert params["out2.W"].shape == (17, 8, 1)
    assert [n for n, *_ in layer_specs(8, 2, 3, 7, 17)] == [
        "input", "res0.in", "res0.conv", "res0.out", "res1.in", "res1.conv", "res1.out", "out1", "out2"]
    X = _images(17, 2, (5, 5))
    before = m.score_samples(X)
    params["out2.b"][3] += 1.0  # live arrays
    assert not np.array_equal(before, m.score_samples(X))


def test_save_and_load_round_trip(tmp_path):
    check_save_and_load(_model(levels=3), PixelCNN, (4, 5), tmp_path)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    m = _model((3, 3), levels=3)
    check_bad_images(PixelCNN, m)
    with pytest.raises(ValueError, match="odd"):
        PixelCNN((3, 3), kernel_size=4)
    with pytest.raises(ValueError, match=r"\(N, 3, 3\)"):
        m.score_samples(np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="fractions"):
        m.score_samples(np.full((1, 3, 3), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        m.score_samples(np.full((1, 3, 3), np.nan))
    with pytest.raises(TypeError, match="integer"):
        m.score_samples(np.array([[["a"] * 3] * 3]))
