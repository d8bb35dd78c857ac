"""probgen.nn.functional and probgen.nn.losses: every forward/backward pair against
float64 finite differences and torch autograd, stability at logits +-1e4, dtype and
shape contracts."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from probgen.nn import functional as F
from probgen.nn import losses as L
from probgen.nn.gradcheck import numerical_vjp, relative_error

FD = dict(eps=1e-3, order=4)  # five-point stencil: truncation O(h^4) ~ 1e-12, rounding ~ 1e-13
TOL_FD = 1e-8
TOL_TORCH = 1e-12


def _away_from_zero(rng, shape, margin=0.05):
    """Standard normals pushed at least ``margin`` away from the kinks of relu/leaky relu."""
    z = rng.standard_normal(shape)
    return z + np.sign(z) * margin


# --------------------------------------------------------------------------- activations
ACTS = {
    "relu": (F.relu_forward, F.relu_backward, lambda t, torch: torch.relu(t)),
    "leaky_relu": (lambda x: F.leaky_relu_forward(x, 0.2), F.leaky_relu_backward,
                   lambda t, torch: torch.nn.functional.leaky_relu(t, 0.2)),
    "leaky_relu_steep": (lambda x: F.leaky_relu_forward(x, 1.5), F.leaky_relu_backward,
                         lambda t, torch: torch.nn.functional.leaky_relu(t, 1.5)),
    "tanh": (F.tanh_forward, F.tanh_backward, lambda t, torch: torch.tanh(t)),
    "sigmoid": (F.sigmoid_forward, F.sigmoid_backward, lambda t, torch: torch.sigmoid(t)),
    "softplus": (F.softplus_forward, F.softplus_backward,
                 lambda t, torch: torch.nn.functional.softplus(t)),
}


@pytest.mark.parametrize("name", list(ACTS))
def test_activation_backward_matches_finite_differences(name):
    fwd, bwd, _ = ACTS[name]
    rng = np.random.default_rng(1)
    x = 2 * _away_from_zero(rng, (4, 5))
    y, cache = fwd(x)
    dy = rng.standard_normal(y.shape)
    (num,) = numerical_vjp(lambda x: fwd(x)[0], [x], dy, **FD)
    assert relative_error(bwd(dy, cache), num) <= TOL_FD


@pytest.mark.parametrize("name", list(ACTS))
def test_activation_matches_torch_autograd(name):
    from _require import require_torch
    torch = require_torch()
    fwd, bwd, tfn = ACTS[name]
    rng = np.random.default_rng(2)
    x = 3 * _away_from_zero(rng, (3, 2, 7))
    y, cache = fwd(x)
    dy = rng.standard_normal(y.shape)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = tfn(xt, torch)
    yt.backward(torch.tensor(dy))
    assert relative_error(y, yt.detach().numpy()) <= TOL_TORCH
    assert relative_error(bwd(dy, cache), xt.grad.numpy()) <= TOL_TORCH


def test_relu_gradient_at_zero_is_zero_as_in_torch():
    y, cache = F.relu_forward(np.array([-1.0, 0.0, 2.0]))
    np.testing.assert_array_equal(F.relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])
    y, cache = F.leaky_relu_forward(np.array([-1.0, 0.0, 2.0]), 0.1)
    np.testing.assert_array_equal(F.leaky_relu_backward(np.ones(3), cache), [0.1, 0.1, 1.0])


# --------------------------------------------------------------------------- linear
def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    x, W, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    y, cache = F.linear_forward(x, W, b)
    dy = rng.standard_normal(y.shape)
    got = F.linear_backward(dy, cache)
    num = numerical_vjp(lambda x, W, b: F.linear_forward(x, W, b)[0], [x, W, b], dy, **FD)
    for g, n in zip(got, num):
        assert relative_error(g, n) <= TOL_FD


def test_linear_matches_torch_with_leading_axes():
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(4)
    x, W, b = rng.standard_normal((2, 5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    y, cache = F.linear_forward(x, W, b)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = F.linear_backward(dy, cache)
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W.T.copy(), requires_grad=True)  # torch's weight is (out, in)
    bt = torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.linear(xt, Wt, bt)
    yt.backward(torch.tensor(dy))
    assert y.shape == (2, 5, 3)
    assert relative_error(y, yt.detach().numpy()) <= TOL_TORCH
    assert relative_error(dx, xt.grad.numpy()) <= TOL_TORCH
    assert relative_error(dW, Wt.grad.numpy().T) <= TOL_TORCH
    assert relative_error(db, bt.grad.numpy()) <= TOL_TORCH


def test_linear_need_dx_false_skips_dx_only():
    rng = np.random.default_rng(5)
    x, W, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    y, cache = F.linear_forward(x, W, b)
    dy = rng.standard_normal(y.shape)
    dx, dW, db = F.linear_backward(dy, cache, need_dx=False)
    full = F.linear_backward(dy, cache)
    assert dx is None
    np.testing.assert_array_equal(dW, full[1])
    np.testing.assert_array_equal(db, full[2])


def test_linear_bad_shapes_and_mixed_dtypes():
    x, W, b = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    with pytest.raises(ValueError, match="x must have shape"):
        F.linear_forward(np.ones((2, 5)), W, b)
    with pytest.raises(ValueError, match="b must have shape"):
        F.linear_forward(x, W, np.ones(3))
    with pytest.raises(ValueError, match="W must be 2-D"):
        F.linear_forward(x, np.ones(3), b)
    with pytest.raises(TypeError, match="float32"):
        F.linear_forward(x.astype(np.float32), W, b)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.linear_forward(np.ones((2, 3), dtype=int), W, b)


# --------------------------------------------------------------------------- losses
def _gauss_closed_form(torch, x, mean, log_var):
    """Closed-form diagonal Gaussian NLL in torch, summed over the last axis."""
    return 0.5 * (np.log(2 * np.pi) + log_var + (x - mean) ** 2 / torch.exp(log_var)).sum(-1)


def test_bernoulli_nll_matches_torch_and_finite_differences():
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(6)
    logits = 3 * rng.standard_normal((5, 7))
    for x in (rng.integers(0, 2, (5, 7)).astype(float), rng.uniform(size=(5, 7))):
        value, cache = L.bernoulli_nll_forward(logits, x)
        dv = rng.standard_normal(5)
        d = L.bernoulli_nll_backward(dv, cache)
        lt = torch.tensor(logits, requires_grad=True)
        vt = torch.nn.functional.binary_cross_entropy_with_logits(
            lt, torch.tensor(x), reduction="none").sum(-1)
        vt.backward(torch.tensor(dv))
        assert value.shape == (5,)
        assert relative_error(value, vt.detach().numpy()) <= TOL_TORCH
        assert relative_error(d, lt.grad.numpy()) <= TOL_TORCH
        (num,) = numerical_vjp(lambda lg: L.bernoulli_nll_forward(lg, x)[0], [logits], dv, **FD)
        assert relative_error(d, num) <= TOL_FD


@pytest.mark.parametrize("lv_shape", [(4, 6), (4, 1), (6,), (), "float"])
def test_gaussian_nll_matches_torch_and_finite_differences(lv_shape):
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(7)
    x, mean = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    log_var = 0.3 if lv_shape == "float" else 0.5 * rng.standard_normal(lv_shape)
    value, cache = L.gaussian_nll_forward(x, mean, log_var)
    dv = rng.standard_normal(4)
    d_mean, d_lv = L.gaussian_nll_backward(dv, cache)
    assert value.shape == (4,) and d_mean.shape == (4, 6) and d_lv.shape == np.shape(log_var)
    mt = torch.tensor(mean, requires_grad=True)
    lvt = torch.tensor(np.asarray(log_var, dtype=float), requires_grad=True)
    closed = _gauss_closed_form(torch, torch.tensor(x), mt, lvt)
    closed.backward(torch.tensor(dv))
    assert relative_error(value, closed.detach().numpy()) <= TOL_TORCH
    assert relative_error(d_mean, mt.grad.numpy()) <= TOL_TORCH
    assert relative_error(d_lv, lvt.grad.numpy()) <= TOL_TORCH
    if lv_shape in [(4, 6), (4, 1)]:  # shapes torch's own loss accepts
        ref = torch.nn.functional.gaussian_nll_loss(
            torch.tensor(mean), torch.tensor(x), torch.exp(torch.tensor(log_var)), full=True,
            reduction="none")
        assert relative_error(value, ref.reshape(4, -1).sum(-1).numpy()) <= TOL_TORCH
    lv_arr = np.asarray(log_var, dtype=float)
    num_mean, num_lv = numerical_vjp(
        lambda m, lv: L.gaussian_nll_forward(x, m, lv)[0], [mean, lv_arr], dv, **FD)
    assert relative_error(d_mean, num_mean) <= TOL_FD
    assert relative_error(d_lv, num_lv) <= TOL_FD


def test_gaussian_nll_rejects_log_var_that_enlarges_shape():
    with pytest.raises(ValueError, match="log_var"):
        L.gaussian_nll_forward(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((5, 3, 2)))
    with pytest.raises(ValueError, match="log_var"):
        L.gaussian_nll_forward(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(3))


def test_mse_matches_torch_and_finite_differences():
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(8)
    pred, target = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5))
    value, cache = L.mse_forward(pred, target)
    dv = rng.standard_normal((3, 4))
    d = L.mse_backward(dv, cache)
    pt = torch.tensor(pred, requires_grad=True)
    vt = torch.nn.functional.mse_loss(pt, torch.tensor(target), reduction="none").mean(-1)
    vt.backward(torch.tensor(dv))
    assert relative_error(value, vt.detach().numpy()) <= TOL_TORCH
    assert relative_error(d, pt.grad.numpy()) <= TOL_TORCH
    (num,) = numerical_vjp(lambda p: L.mse_forward(p, target)[0], [pred], dv, **FD)
    assert relative_error(d, num) <= TOL_FD


def test_categorical_nll_matches_torch_and_finite_differences():
    from _require import require_torch
    torch = require_torch()
    rng = np.random.default_rng(9)
    logits = 2 * rng.standard_normal((2, 5, 4))
    labels = rng.integers(0, 4, (2, 5))
    value, cache = L.categorical_nll_forward(logits, labels)
    dv = rng.standard_normal((2, 5))
    d = L.categorical_nll_backward(dv, cache)
    lt = torch.tensor(logits, requires_grad=True)
    vt = torch.nn.functional.cross_entropy(lt.reshape(-1, 4), torch.tensor(labels.reshape(-1)),
                                           reduction="none").reshape(2, 5)
    vt.backward(torch.tensor(dv))
    assert relative_error(value, vt.detach().numpy()) <= TOL_TORCH
    assert relative_error(d, lt.grad.numpy()) <= TOL_TORCH
    (num,) = numerical_vjp(lambda lg: L.categorical_nll_forward(lg, labels)[0], [logits], dv, **FD)
    assert relative_error(d, num) <= TOL_FD


def test_categorical_labels_are_checked():
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        L.categorical_nll_forward(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        L.categorical_nll_forward(logits, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integer"):
        L.categorical_nll_forward(logits, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        L.categorical_nll_forward(logits, np.array([0, 1]))


def test_loss_targets_are_checked():
    with pytest.raises(ValueError, match="x must have shape"):
        L.bernoulli_nll_forward(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(TypeError, match="float32"):
        L.mse_forward(np.zeros((3, 4), np.float32), np.zeros((3, 4)))
    # binary data as bool/uint8 is cast to the logits' dtype
    v, _ = L.bernoulli_nll_forward(np.zeros((2, 3), np.float32), np.ones((2, 3), np.uint8))
    assert v.dtype == np.float32
    np.testing.assert_allclose(v, 3 * np.log(2.0), rtol=1e-6)


# --------------------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_give_finite_exact_values_and_gradients(dtype):
    logits = np.array([[1e4, -1e4, 1e4, -1e4, 0.0]], dtype=dtype)
    x = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]], dtype=dtype)
    value, cache = L.bernoulli_nll_forward(logits, x)
    d = L.bernoulli_nll_backward(np.ones(1, dtype), cache)
    assert np.isfinite(value).all() and np.isfinite(d).all()
    # exact: softplus(-1e4) ~ 0, so NLL = 0 + 0 + 1e4 + 1e4 + log 2
    np.testing.assert_allclose(value, [2e4 + np.log(2.0)], rtol=1e-6)
    np.testing.assert_allclose(d, [[0.0, 0.0, 1.0, -1.0, -0.5]], atol=1e-7)

    cl = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    value, cache = L.categorical_nll_forward(cl, np.array([1, 2]))
    d = L.categorical_nll_backward(np.ones(2, dtype), cache)
    assert np.isfinite(value).all() and np.isfinite(d).all()
    np.testing.assert_allclose(value, [2e4, np.log(3.0)], rtol=1e-6)
    np.testing.assert_allclose(d, [[1.0, -1.0, 0.0], [1 / 3, 1 / 3, -2 / 3]], atol=1e-6)

    for fwd, bwd in [(F.sigmoid_forward, F.sigmoid_backward), (F.softplus_forward, F.softplus_backward),
                     (F.tanh_forward, F.tanh_backward)]:
        y, c = fwd(logits)
        assert np.isfinite(y).all() and np.isfinite(bwd(np.ones_like(y), c)).all()
    np.testing.assert_array_equal(F.sigmoid(logits[0, :2]), [1.0, 0.0])
    np.testing.assert_array_equal(F.softplus(logits[0, :2]), [1e4, 0.0])


def test_sigmoid_keeps_relative_precision_of_small_probabilities():
    x = np.array([-30.0, -300.0, -700.0])
    np.testing.assert_allclose(F.sigmoid(x), np.exp(x) / (1 + np.exp(x)), rtol=1e-15)
    np.testing.assert_allclose(F.softplus(x), np.log1p(np.exp(x)), rtol=1e-15)


def test_logsumexp_and_log_softmax():
    x = np.array([[1e4, 1e4 - 1.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    lse = F.logsumexp(x, axis=-1)
    np.testing.assert_allclose(lse[0], 1e4 + np.log1p(np.exp(-1.0)), rtol=1e-15)
    assert lse[1] == -np.inf
    ls = F.log_softmax(np.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(np.exp(ls).sum(), 1.0, rtol=1e-15)
    np.testing.assert_allclose(ls, np.log(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())[None], rtol=1e-14)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 6)),
              elements=st.floats(-1e4, 1e4, allow_nan=False)),
       st.integers(0, 2**32 - 1))
def test_bernoulli_nll_is_stable_for_any_logits(logits, seed):
    x = np.random.default_rng(seed).integers(0, 2, logits.shape).astype(float)
    value, cache = L.bernoulli_nll_forward(logits, x)
    d = L.bernoulli_nll_backward(np.ones(logits.shape[0]), cache)
    # -log p(x) = log(1 + exp(-s l)) with s = 2x - 1: logaddexp is an independent stable form
    ref = np.logaddexp(0.0, -(2 * x - 1) * logits).sum(-1)
    np.testing.assert_allclose(value, ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.isfinite(d)) and np.all(np.abs(d) <= 1.0) and np.all(value >= 0)


# --------------------------------------------------------------------------- contracts
def _all_pairs(x):
    """(name, y, cache, backward) for every pair evaluated at ``x`` of shape (3, 4)."""
    W, b = np.ones((4, 2), x.dtype), np.zeros(2, x.dtype)
    t = (x > 0).astype(x.dtype)
    out = [("linear", *F.linear_forward(x, W, b), lambda dy, c: F.linear_backward(dy, c))]
    for name, (fwd, bwd, _) in ACTS.items():
        out.append((name, *fwd(x), bwd))
    out.append(("bernoulli", *L.bernoulli_nll_forward(x, t), L.bernoulli_nll_backward))
    out.append(("gaussian", *L.gaussian_nll_forward(t, x, x[0] * 0.1), L.gaussian_nll_backward))
    out.append(("mse", *L.mse_forward(x, t), L.mse_backward))
    out.append(("categorical", *L.categorical_nll_forward(x, np.array([0, 3, 1])),
                L.categorical_nll_backward))
    return out


def test_float32_is_preserved_by_every_pair():
    x = np.random.default_rng(10).standard_normal((3, 4)).astype(np.float32)
    for name, y, cache, bwd in _all_pairs(x):
        assert y.dtype == np.float32, name
        grads = bwd(np.ones_like(y), cache)
        for g in grads if isinstance(grads, tuple) else (grads,):
            assert g.dtype == np.float32, name


def test_every_backward_checks_the_upstream_shape_and_dtype():
    x = np.random.default_rng(11).standard_normal((3, 4))
    for _name, y, cache, bwd in _all_pairs(x):
        bad = np.ones(y.shape[:-1] + (1,)) if y.ndim > 1 else np.ones((1,) + y.shape)
        with pytest.raises(ValueError, match="shape"):
            bwd(bad, cache)
        with pytest.raises(ValueError, match="shape"):
            bwd(np.ones(y.shape[::-1] + (1,)), cache)
        with pytest.raises(TypeError, match="dtype"):
            bwd(np.ones(y.shape, np.float32), cache)


def test_backward_rejects_a_foreign_cache():
    _, cache = F.relu_forward(np.ones(3))
    with pytest.raises(TypeError, match="tanh_forward"):
        F.tanh_backward(np.ones(3), cache)
