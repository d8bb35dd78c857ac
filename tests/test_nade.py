"""NADE: compiled kernels vs NumPy twins, gradients (finite differences, torch autograd), exact normalisation,
sampling, autoregressive property, training, persistence and input checks."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import probgen.models.nade as nade_mod
from probgen._validation import NotFittedError
from probgen.models.nade import (
    NADE,
    nade_logits,
    nade_logits_reference,
    nade_loss_and_grads,
    nade_loss_and_grads_reference,
    nade_sample,
    nade_sample_reference,
)
from probgen.nn.gradcheck import gradcheck, relative_error


def _params(D, H, seed=0, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [(scale * rng.standard_normal(s)).astype(dtype) for s in ((D, H), (D, H), (D,), (H,))]


def _data(N, D, seed=0, p=0.4, dtype=np.float64):
    return (np.random.default_rng(seed).random((N, D)) < p).astype(dtype)


def _model(D, H, seed=0, scale=1.0, dtype=np.float64):
    model = NADE(n_hidden=H, rng=seed, dtype=dtype).build(D)
    for p, v in zip(model.named_parameters().values(), _params(D, H, seed, scale, dtype)):
        p[...] = v
    return model


# --------------------------------------------------------------------------- kernels vs twins
@given(N=st.integers(1, 6), D=st.integers(1, 7), H=st.integers(1, 6), seed=st.integers(0, 2**16),
       f32=st.booleans())
def test_kernels_match_numpy_twins(N, D, H, seed, f32):
    dt = np.float32 if f32 else np.float64
    tol = 2e-5 if f32 else 1e-12
    W, V, b, c = _params(D, H, seed, dtype=dt)
    X = _data(N, D, seed, dtype=dt)
    L = nade_logits(X, W, V, b, c)
    assert L.dtype == dt
    np.testing.assert_allclose(L, nade_logits_reference(X, W, V, b, c), rtol=tol, atol=tol)
    loss, g = nade_loss_and_grads(X, W, V, b, c)
    loss_r, g_r = nade_loss_and_grads_reference(X, W, V, b, c)
    assert abs(loss - loss_r) <= tol * max(1.0, abs(loss_r))
    for k in g:
        assert g[k].dtype == dt
        assert relative_error(g[k], g_r[k]) <= tol, k
    U = np.random.default_rng(seed + 1).random((5, D)).astype(dt)
    np.testing.assert_array_equal(nade_sample(U, W, V, b, c), nade_sample_reference(U, W, V, b, c))


def test_kernels_split_into_groups(monkeypatch):
    """Many examples per call go through several cache-sized groups: same answer as one group."""
    W, V, b, c = _params(5, 4, seed=1)
    X = _data(23, 5, seed=2)
    whole = nade_loss_and_grads(X, W, V, b, c)
    monkeypatch.setattr(nade_mod, "_GROUP_ELEMENTS", 3 * 5 * 4)  # groups of 3 examples, last one of 2
    split = nade_loss_and_grads(X, W, V, b, c)
    np.testing.assert_allclose(nade_logits(X, W, V, b, c), nade_logits_reference(X, W, V, b, c), rtol=1e-13)
    assert abs(whole[0] - split[0]) < 1e-13
    for k in whole[1]:
        np.testing.assert_allclose(split[1][k], whole[1][k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_split_the_rows(monkeypatch, threads):
    """Rows split between threads (own buffers and gradient sums, added at the end): same answer."""
    W, V, b, c = _params(6, 5, seed=11)
    X = _data(26, 6, seed=12)
    loss_r, g_r = nade_loss_and_grads_reference(X, W, V, b, c)
    monkeypatch.setattr(nade_mod, "_n_threads", lambda N: threads)
    monkeypatch.setattr(nade_mod, "_GROUP_ELEMENTS", 4 * 6 * 5)  # several groups per thread too
    loss, g = nade_loss_and_grads(X, W, V, b, c)
    assert abs(loss - loss_r) <= 1e-13 * abs(loss_r)
    for k in g:
        assert relative_error(g[k], g_r[k]) <= 1e-13, k
    np.testing.assert_allclose(nade_logits(X, W, V, b, c), nade_logits_reference(X, W, V, b, c), rtol=1e-13,
                               atol=1e-14)


def test_saturated_units_give_no_warnings_or_nans():
    W, V, b, c = _params(6, 3, seed=3, scale=300.0)  # pre-activations of +-1000: exp overflows to inf
    X = _data(4, 6, seed=4)
    with np.errstate(all="raise"):
        loss, grads = nade_loss_and_grads(X, W, V, b, c)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    loss_r, _ = nade_loss_and_grads_reference(X, W, V, b, c)
    assert abs(loss - loss_r) <= 1e-9 * abs(loss_r)


# --------------------------------------------------------------------------- gradients
def test_gradients_match_finite_differences():
    model = _model(5, 4, seed=5, scale=0.8)
    X = _data(7, 5, seed=6)
    report = gradcheck(lambda: model.loss_and_grads(X), model.named_parameters(), eps=1e-3, order=4, rtol=1e-8)
    assert report.passed


def test_gradients_match_torch_autograd():
    from _require import require_torch

    torch = require_torch()
    N, D, H = 9, 7, 5
    model = _model(D, H, seed=7, scale=0.8)
    X = _data(N, D, seed=8)
    loss, grads = model.loss_and_grads(X)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in model.named_parameters().items()}
    x = torch.tensor(X)
    # the definition, one pixel at a time: a_1 = c, h_d = sigmoid(a_d), l_d = b_d + V_d.h_d, a_{d+1} = a_d + x_d W_d
    a = t["c"].expand(N, H)
    logits = []
    for d in range(D):
        h = torch.sigmoid(a)
        logits.append(h @ t["V"][d] + t["b"][d])
        a = a + x[:, d:d + 1] * t["W"][d]
    tl = torch.nn.functional.binary_cross_entropy_with_logits(torch.stack(logits, 1), x, reduction="sum") / N
    tl.backward()
    assert abs(loss - tl.item()) <= 1e-12 * abs(tl.item())
    np.testing.assert_allclose(model.conditional_logits(X), torch.stack(logits, 1).detach().numpy(), rtol=1e-12,
                               atol=1e-12)
    for k in t:
        assert relative_error(grads[k], t[k].grad.numpy()) <= 1e-10, k


# --------------------------------------------------------------------------- the distribution
def test_probabilities_sum_to_one():
    D = 10
    model = _model(D, 6, seed=9, scale=1.5)
    X = np.array(list(itertools.product([0, 1], repeat=D)), dtype=np.uint8)
    total = np.exp(model.score_samples(X)).sum()
    assert abs(total - 1.0) < 1e-12


@given(seed=st.integers(0, 2**16), d=st.integers(0, 6))
def test_conditional_logits_are_autoregressive(seed, d):
    rng = np.random.default_rng(seed)
    model = _model(7, 4, seed=seed)
    X = rng.integers(0, 2, size=(3, 7))
    Y = X.copy()
    Y[:, d:] = rng.integers(0, 2, size=Y[:, d:].shape)  # change pixel d and everything after it
    np.testing.assert_array_equal(model.conditional_logits(Y)[:, :d + 1], model.conditional_logits(X)[:, :d + 1])


def test_samples_follow_the_model():
    D, n = 4, 40_000
    model = _model(D, 3, seed=10, scale=0.8)
    states = np.array(list(itertools.product([0, 1], repeat=D)))
    probs = np.exp(model.score_samples(states))
    S = model.sample(n, rng=11)
    assert S.shape == (n, D) and S.dtype == np.float64 and set(np.unique(S)) <= {0.0, 1.0}
    counts = np.bincount(S.astype(int) @ (2 ** np.arange(D - 1, -1, -1)), minlength=2 ** D)
    assert probs.min() * n > 20
    assert stats.chisquare(counts, probs / probs.sum() * n).pvalue > 1e-4


# --------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_keeps_the_best():
    from probgen.datasets import load_digits

    X = load_digits().binary
    train, valid = X[:1400], X[1400:]
    model = NADE(n_hidden=16, rng=0)
    model.fit(train, epochs=4, batch_size=50, lr=5e-3, progress=False, validation=valid, keep_best=True)
    h = model.history_
    assert h["train_nll"][-1] < h["train_nll"][0]
    best = int(np.argmin(h["validation_nll"]))
    assert h["best_epoch"] == best + 1
    assert np.isclose(-model.score(valid), h["validation_nll"][best], rtol=1e-12)
    # the biases start at the data's (smoothed) marginal logits: better than uniform pixels
    start = NADE(n_hidden=16, rng=0)
    start.fit(train, epochs=0, progress=False)
    assert -start.score(valid) < 64 * np.log(2)


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path):
    X = _data(40, 6, seed=15)
    V = _data(10, 6, seed=16)
    kw = dict(batch_size=8, lr=1e-2, validation=V, progress=False)
    full = NADE(n_hidden=4, rng=7).fit(X, epochs=3, **kw)
    NADE(n_hidden=4, rng=7).fit(X, epochs=2, checkpoint=tmp_path / "ck.npz", **kw)
    resumed = NADE(n_hidden=4, rng=7).fit(X, epochs=3, checkpoint=tmp_path / "ck.npz", resume=tmp_path / "ck.npz",
                                          **kw)
    for k, p in full.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[k], p)
    assert resumed.history_["validation_nll"] == full.history_["validation_nll"]


def test_seeds_reproduce():
    X = _data(40, 6, seed=12)
    fit = lambda seed: NADE(n_hidden=4, rng=seed).fit(X, epochs=2, batch_size=8, progress=False)  # noqa: E731
    a, b, c = fit(1), fit(1), fit(2)
    for k in a.named_parameters():
        np.testing.assert_array_equal(a.named_parameters()[k], b.named_parameters()[k])
    assert not np.array_equal(a.named_parameters()["W"], c.named_parameters()["W"])
    np.testing.assert_array_equal(a.sample(10), b.sample(10))


def test_float32_end_to_end():
    X = _data(30, 6, seed=13, dtype=np.uint8)
    m32 = NADE(n_hidden=5, rng=0, dtype=np.float32).fit(X, epochs=2, batch_size=10, progress=False)
    m64 = NADE(n_hidden=5, rng=0).fit(X, epochs=2, batch_size=10, progress=False)
    assert all(p.dtype == np.float32 for p in m32.named_parameters().values())
    assert m32.score_samples(X).dtype == np.float32
    assert m32.conditional_logits(X).dtype == np.float32
    assert m32.sample(4).dtype == np.float32
    loss, grads = m32.loss_and_grads(X)
    assert isinstance(loss, float) and all(g.dtype == np.float32 for g in grads.values())
    np.testing.assert_allclose(m32.score_samples(X), m64.score_samples(X), rtol=1e-4)


def test_save_load_round_trip(tmp_path):
    X = _data(30, 6, seed=14)
    model = NADE(n_hidden=5, rng=3, dtype=np.float32).fit(X, epochs=2, batch_size=10, progress=False)
    model.save(tmp_path / "nade.npz")
    back = NADE.load(tmp_path / "nade.npz")
    assert back.n_hidden == 5 and back.dtype == np.float32 and back.history_ == model.history_
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))
    np.testing.assert_array_equal(back.sample(6), model.sample(6))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "nade.npz").read_bytes()[:200])
    with pytest.raises(ValueError):
        NADE.load(tmp_path / "bad.npz")


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    X = _data(10, 5)
    with pytest.raises(NotFittedError):
        NADE(3).conditional_logits(X)
    with pytest.raises(NotFittedError):
        NADE(3).named_parameters()
    with pytest.raises(ValueError, match="probgen.datasets.binarize"):
        NADE(3).fit(X * 0.5)
    model = NADE(3, rng=0).fit(X, epochs=1, progress=False)
    with pytest.raises(ValueError, match="5 features"):
        model.score_samples(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="5 features"):
        model.fit(np.zeros((4, 6)), epochs=1, progress=False)
    with pytest.raises(ValueError, match="probgen.datasets.binarize"):
        model.loss_and_grads(np.full((2, 5), 3))
    with pytest.raises(ValueError, match="NaN"):
        model.score_samples(np.full((2, 5), np.inf))
    with pytest.raises(ValueError):
        NADE(0)
    with pytest.raises(TypeError):
        NADE(2.5)
    W, V, b, c = _params(5, 3)
    with pytest.raises(ValueError, match="expected"):
        nade_logits(X, W, V[:, :2], b, c)
    with pytest.raises(TypeError, match="dtype"):
        nade_logits(X.astype(np.float32), W, V, b, c)
