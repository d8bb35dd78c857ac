"""probgen.models.PixelRNN: gradients (finite differences, a hand-written torch LSTM under autograd),
causality, exact normalisation by enumeration, sampling against the model's own probabilities, training,
reproducibility, dtype, persistence and bad input."""
import itertools

import numpy as np
import pytest
from _image_models import check_bad_images, check_save_and_load
from _image_models import images as _images
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from probgen.models.pixelrnn import PixelRNN, lstm_backward, lstm_forward
from probgen.nn.gradcheck import gradcheck, numerical_vjp, relative_error


def _model(shape=(3, 3), hidden=5, levels=2, seed=0, dtype=np.float64, jitter=0.4):
    """A built model with every parameter moved off its initial value (non-zero start, biases)."""
    m = PixelRNN(shape, hidden=hidden, levels=levels, rng=seed, dtype=dtype).build()
    r = np.random.default_rng(seed + 100)
    for p in m.named_parameters().values():
        p += (jitter * r.standard_normal(p.shape)).astype(dtype)
    return m


def _all_images(levels, shape):
    D = shape[0] * shape[1]
    return np.array(list(itertools.product(range(levels), repeat=D))).reshape((-1,) + tuple(shape))


# ----------------------------------------------------------------------------- gradients
def _torch_loss_and_grads(model, X, torch):
    """The same model written independently in torch (hand-written LSTM cell, float64 autograd)."""
    P = {k: torch.tensor(v, requires_grad=True) for k, v in model.named_parameters().items()}
    L, Hd = model.levels, model.hidden
    N = X.shape[0]
    x = torch.tensor(X.reshape(N, -1), dtype=torch.long)
    T = x.shape[1]
    h = torch.zeros(N, Hd, dtype=torch.float64)
    c = torch.zeros(N, Hd, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        if t == 0:
            z = P["lstm.start"].expand(N, -1)
        elif L == 2:
            z = x[:, t - 1:t].double()
        else:
            z = torch.nn.functional.one_hot(x[:, t - 1], L).double()
        a = z @ P["lstm.W"] + h @ P["lstm.U"] + P["lstm.b"]
        i, f, o = (torch.sigmoid(a[:, k * Hd:(k + 1) * Hd]) for k in range(3))
        g = torch.tanh(a[:, 3 * Hd:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        logit = h @ P["out.W"] + P["out.b"]
        if L == 2:
            total = total + torch.nn.functional.binary_cross_entropy_with_logits(
                logit[:, 0], x[:, t].double(), reduction="sum")
        else:
            total = total + torch.nn.functional.cross_entropy(logit, x[:, t], reduction="sum")
    loss = total / N
    loss.backward()
    return float(loss.detach()), {k: v.grad.numpy() for k, v in P.items()}


@pytest.mark.parametrize("levels", [2, 3])
def test_loss_and_grads_match_torch_autograd(levels):
    from _require import require_torch
    torch = require_torch()
    m = _model((3, 3), hidden=6, levels=levels)
    X = _images(levels, 5, (3, 3))
    loss, grads = m.loss_and_grads(X)
    t_loss, t_grads = _torch_loss_and_grads(m, X, torch)
    assert abs(loss - t_loss) <= 1e-12 * abs(t_loss)
    assert set(grads) == set(t_grads)
    for k in grads:
        assert grads[k].shape == t_grads[k].shape
        assert relative_error(grads[k], t_grads[k]) <= 1e-8, k


@pytest.mark.parametrize("levels", [2, 3])
def test_loss_and_grads_match_finite_differences(levels):
    m = _model((2, 3), hidden=4, levels=levels)
    X = _images(levels, 4, (2, 3))
    report = gradcheck(lambda: m.loss_and_grads(X), m.named_parameters(), rtol=1e-6, rng=0)
    assert report.passed


def test_lstm_backward_matches_finite_differences_through_the_inputs_state():
    """The LSTM layer alone, against an arbitrary upstream dL/dh_t at every step."""
    r = np.random.default_rng(3)
    T, N, I, H = 4, 3, 2, 3
    Z, W, U, b = (r.standard_normal(s) for s in [(T, N, I), (I, 4 * H), (H, 4 * H), (4 * H,)])
    dHs = r.standard_normal((T, N, H))
    dZ0, dW, dU, db = lstm_backward(dHs, lstm_forward(Z, W, U, b)[1])
    _, nW, nU, nb = numerical_vjp(lambda Z, W, U, b: lstm_forward(Z, W, U, b)[0], [Z, W, U, b], dHs)
    nZ = numerical_vjp(lambda Z: lstm_forward(Z, W, U, b)[0], [Z], dHs)[0]
    for a, n in [(dW, nW), (dU, nU), (db, nb), (dZ0, nZ[0])]:
        assert relative_error(a, n) <= 1e-7


# ----------------------------------------------------------------------------- causality, normalisation
@given(H=st.integers(1, 3), W=st.integers(1, 4), levels=st.sampled_from([2, 3, 5]), seed=st.integers(0, 10 ** 6))
def test_conditional_at_t_ignores_pixels_from_t_on(H, W, levels, seed):
    m = _model((H, W), hidden=4, levels=levels, seed=seed % 1000)
    r = np.random.default_rng(seed)
    X = r.integers(0, levels, (1, H, W))
    base = m.conditional_logits(X)
    T = H * W
    for t in range(T):
        Y = X.copy().reshape(1, -1)
        Y[0, t:] = r.integers(0, levels, T - t)
        logits = m.conditional_logits(Y.reshape(1, H, W)).reshape(1, T, -1)
        np.testing.assert_array_equal(logits[0, :t + 1], base.reshape(1, T, -1)[0, :t + 1])


def test_conditionals_do_depend_on_the_past():
    m = _model((2, 2), levels=2)
    a = m.conditional_logits(np.array([[[0, 0], [0, 0]]]))
    b = m.conditional_logits(np.array([[[1, 0], [0, 0]]]))
    assert a[0, 0, 0] == b[0, 0, 0] and np.all(a.reshape(-1)[1:] != b.reshape(-1)[1:])


@pytest.mark.parametrize("levels, shape", [(2, (3, 3)), (3, (2, 2))])
def test_probabilities_sum_to_one_over_all_images(levels, shape):
    m = _model(shape, levels=levels)
    total = np.exp(m.score_samples(_all_images(levels, shape))).sum()
    assert abs(total - 1.0) <= 1e-12


@pytest.mark.parametrize("levels", [2, 4])
def test_score_samples_is_the_sum_of_the_conditionals(levels):
    m = _model((2, 3), levels=levels)
    X = _images(levels, 6, (2, 3))
    logits = m.conditional_logits(X).reshape(6, 6, -1)
    x = X.reshape(6, 6)
    if levels == 2:
        p1 = 1 / (1 + np.exp(-logits[..., 0]))
        expected = np.log(np.where(x == 1, p1, 1 - p1)).sum(axis=1)
    else:
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        expected = np.take_along_axis(logp, x[..., None], axis=-1)[..., 0].sum(axis=1)
    np.testing.assert_allclose(m.score_samples(X), expected, rtol=1e-12)
    assert abs(m.loss_and_grads(X)[0] + expected.mean()) <= 1e-12 * abs(expected.mean())


@pytest.mark.parametrize("levels, shape", [(2, (2, 2)), (3, (1, 2))])
def test_sampling_matches_the_model_distribution(levels, shape):
    m = _model(shape, levels=levels, jitter=0.8)
    all_x = _all_images(levels, shape)
    p = np.exp(m.score_samples(all_x))
    S = m.sample(6000, rng=11)
    assert S.shape == (6000,) + shape and S.dtype == np.uint8 and S.max() < levels
    index = (S.reshape(6000, -1) * levels ** np.arange(S[0].size)[::-1]).sum(axis=1)  # lexicographic code
    counts = np.bincount(index, minlength=len(p))
    _, pvalue = stats.chisquare(counts, 6000 * p)
    assert pvalue > 1e-3


# ----------------------------------------------------------------------------- training, seeds, dtype
@pytest.mark.parametrize("levels", [2, 5])
def test_training_lowers_the_loss_and_is_reproducible(levels):
    r = np.random.default_rng(0)
    # structured data: each row copies its first pixel, so the past predicts the future
    first = r.integers(0, levels, (96, 4, 1))
    X = np.where(r.random((96, 4, 4)) < 0.9, first, r.integers(0, levels, (96, 4, 4)))
    kw = dict(hidden=8, levels=levels, rng=3)
    before = -PixelRNN((4, 4), **kw).build().score(X)
    m = PixelRNN((4, 4), **kw).fit(X[:64], epochs=4, batch_size=16, lr=1e-2, validation=X[64:], progress=False)
    h = m.history_
    assert h["epoch"] == [1, 2, 3, 4] and len(h["validation_nll"]) == 4
    assert h["train_nll"][-1] < h["train_nll"][0] and -m.score(X) < before
    assert abs(h["validation_nll"][-1] + m.score(X[64:])) <= 1e-9 * h["validation_nll"][-1]
    again = PixelRNN((4, 4), **kw).fit(X[:64], epochs=4, batch_size=16, lr=1e-2, validation=X[64:],
                                        progress=False)
    assert again.history_ == h
    for k, v in m.named_parameters().items():
        np.testing.assert_array_equal(v, again.named_parameters()[k])
    other = PixelRNN((4, 4), **{**kw, "rng": 4}).build()
    assert not np.array_equal(other.named_parameters()["lstm.U"], PixelRNN((4, 4), **kw).build()
                              .named_parameters()["lstm.U"])


def test_samples_are_reproducible_for_a_seed():
    m = _model((3, 4), levels=3)
    np.testing.assert_array_equal(m.sample(5, rng=1), m.sample(5, rng=1))
    assert not np.array_equal(m.sample(20, rng=1), m.sample(20, rng=2))
    a = PixelRNN((2, 3), hidden=4, rng=7).build()
    b = PixelRNN((2, 3), hidden=4, rng=7).build()
    np.testing.assert_array_equal(a.sample(10), b.sample(10))  # the model's own generator


def test_float32_is_kept_end_to_end():
    m64 = _model(levels=4)
    m32 = PixelRNN((3, 3), hidden=5, levels=4, dtype=np.float32).build()
    for k, p in m32.named_parameters().items():
        p[...] = m64.named_parameters()[k]
    X = _images(4, 3, (3, 3))
    loss32, g32 = m32.loss_and_grads(X)
    loss64, g64 = m64.loss_and_grads(X)
    assert all(p.dtype == np.float32 for p in m32.named_parameters().values())
    assert all(g.dtype == np.float32 for g in g32.values())
    assert m32.score_samples(X).dtype == np.float32 and m32.conditional_logits(X).dtype == np.float32
    assert abs(loss32 - loss64) <= 1e-5 * loss64
    assert max(relative_error(g32[k], g64[k]) for k in g64) < 1e-4
    m32.fit(X, epochs=1, batch_size=2, progress=False)
    assert all(p.dtype == np.float32 for p in m32.named_parameters().values())
    assert m32.sample(2, rng=0).dtype == np.uint8


# ----------------------------------------------------------------------------- structure, persistence
def test_parameters_are_named_live_and_shaped():
    m = PixelRNN((5, 5), hidden=8, levels=17, rng=0).build()
    params = m.named_parameters()
    assert {k: v.shape for k, v in params.items()} == {
        "lstm.W": (17, 32), "lstm.U": (8, 32), "lstm.b": (32,), "lstm.start": (17,), "out.W": (8, 17),
        "out.b": (17,)}
    np.testing.assert_array_equal(params["lstm.b"], np.r_[np.zeros(8), np.ones(8), np.zeros(16)])
    assert PixelRNN((2, 2), hidden=3).build().named_parameters()["lstm.W"].shape == (1, 12)
    X = _images(17, 2, (5, 5))
    before = m.score_samples(X)
    params["out.b"][3] += 1.0  # live arrays
    assert not np.array_equal(before, m.score_samples(X))


def test_save_and_load_round_trip(tmp_path):
    check_save_and_load(_model(levels=3), PixelRNN, (3, 3), tmp_path)


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    m = _model((3, 3), levels=3)
    check_bad_images(PixelRNN, m)
    with pytest.raises(ValueError, match="hidden"):
        PixelRNN((3, 3), hidden=0)
    with pytest.raises(TypeError, match="X"):
        m.score_samples("abc")
    with pytest.raises(ValueError, match="at least one"):
        m.score_samples(np.zeros((0, 3, 3), int))
