"""probgen.nn.optim: SGD and Adam trajectories equal torch.optim's, the Numba Adam kernel
equals its NumPy twin, state round-trips through np.savez without pickle."""
import io

import numpy as np
import pytest

from probgen.nn import losses as L
from probgen.nn.layers import mlp
from probgen.nn.optim import SGD, Adam, adam_update, adam_update_reference


def _problem(dtype=np.float64, seed=0):
    """Parameters of a small MLP and a gradient field g(p) = c * p + d + 0.1 sin(p) per array."""
    params = {k: v.copy() for k, v in mlp([5, 7, 3], rng=seed, dtype=dtype).named_parameters().items()}
    rng = np.random.default_rng(seed + 100)
    coef = {k: (rng.uniform(0.1, 2.0, v.shape).astype(dtype), rng.standard_normal(v.shape).astype(dtype))
            for k, v in params.items()}

    def grad(name, p):
        c, d = coef[name]
        return c * p + d + 0.1 * np.sin(p)

    return params, grad


def _run_ours(opt, grad, n):
    for _ in range(n):
        opt.step({k: grad(k, p) for k, p in opt.params.items()})


def _run_torch(torch, params, grad, make_opt, n):
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = make_opt(list(tp.values()))
    for _ in range(n):
        for k, t in tp.items():
            t.grad = torch.from_numpy(grad(k, t.detach().numpy()))
        opt.step()
    return {k: t.detach().numpy() for k, t in tp.items()}


@pytest.mark.parametrize("kw", [
    dict(),
    dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
])
def test_adam_trajectory_equals_torch(kw):
    from _require import require_torch
    torch = require_torch()
    params, grad = _problem()
    theirs = _run_torch(torch, params, grad, lambda ps: torch.optim.Adam(ps, **kw), 12)
    opt = Adam(params, **kw)
    _run_ours(opt, grad, 12)
    assert opt.n_steps == 12
    for k in params:
        np.testing.assert_allclose(params[k], theirs[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kw", [dict(lr=0.05), dict(lr=0.05, momentum=0.9),
                                dict(lr=0.02, momentum=0.5, weight_decay=0.1)])
def test_sgd_trajectory_equals_torch(kw):
    from _require import require_torch
    torch = require_torch()
    params, grad = _problem()
    theirs = _run_torch(torch, params, grad, lambda ps: torch.optim.SGD(ps, **kw), 12)
    opt = SGD(params, **kw)
    _run_ours(opt, grad, 12)
    for k in params:
        np.testing.assert_allclose(params[k], theirs[k], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-15), (np.float32, 1e-6)])
def test_adam_kernel_equals_numpy_twin(dtype, rtol):
    rng = np.random.default_rng(1)
    shape = (37, 23)
    a = [rng.standard_normal(shape).astype(dtype) for _ in range(2)] + [
        (0.1 * rng.standard_normal(shape)).astype(dtype), rng.uniform(0, 0.1, shape).astype(dtype)]
    b = [x.copy() for x in a]
    for step in (1, 2, 7):
        kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, step=step, weight_decay=0.01)
        adam_update(a[0], a[1], a[2], a[3], **kw)
        adam_update_reference(b[0], b[1], b[2], b[3], **kw)
        for x, y in zip(a, b):
            assert x.dtype == dtype
            np.testing.assert_allclose(x, y, rtol=rtol, atol=0)


def test_adam_kernel_argument_checks():
    p = np.zeros((3, 2))
    with pytest.raises(ValueError, match="shape"):
        adam_update(p, np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((3, 2)), lr=1e-3, beta1=0.9,
                    beta2=0.999, eps=1e-8, step=1)
    with pytest.raises(TypeError, match="dtype"):
        adam_update(p, np.zeros((3, 2), np.float32), np.zeros((3, 2)), np.zeros((3, 2)), lr=1e-3,
                    beta1=0.9, beta2=0.999, eps=1e-8, step=1)
    with pytest.raises(ValueError, match="C-contiguous"):
        adam_update(np.zeros((2, 3)).T, np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2)),
                    lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=1)
    with pytest.raises(ValueError, match="step"):
        adam_update(p, p.copy(), p.copy(), p.copy(), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, step=0)


@pytest.mark.parametrize("make", [lambda p: Adam(p, lr=0.01),
                                  lambda p: SGD(p, lr=0.01, momentum=0.9)])
def test_state_round_trips_through_npz_and_resumes_bit_identically(make):
    params, grad = _problem()
    straight = {k: v.copy() for k, v in params.items()}
    _run_ours(make(straight), grad, 6)

    opt = make(params)
    _run_ours(opt, grad, 3)
    buf = io.BytesIO()
    np.savez(buf, **opt.state_dict())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        state = {k: f[k] for k in f.files}
    resumed = make(params)  # fresh optimiser on the same (live) parameters
    resumed.load_state_dict(state)
    assert resumed.n_steps == 3
    _run_ours(resumed, grad, 3)
    for k in params:
        np.testing.assert_array_equal(params[k], straight[k])


def test_state_dict_is_a_copy_and_restores_hyper_parameters():
    params, grad = _problem()
    opt = Adam(params, lr=0.01)
    _run_ours(opt, grad, 2)
    state = opt.state_dict()
    assert state["n_steps"] == 2 and state["lr"] == 0.01 and state["beta2"] == 0.999
    assert set(state) == {"n_steps", "lr", "beta1", "beta2", "eps", "weight_decay"} | {
        f"{s}.{k}" for s in "mv" for k in params}
    _run_ours(opt, grad, 1)
    assert not np.array_equal(state["m.0.W"], opt.state["m"]["0.W"])
    other = Adam(params, lr=0.5)
    other.load_state_dict(state)
    assert other.lr == 0.01 and other.n_steps == 2


def test_load_state_dict_refuses_bad_state_and_writes_nothing():
    params, grad = _problem()
    opt = Adam(params)
    _run_ours(opt, grad, 2)
    good = opt.state_dict()
    before = opt.state_dict()
    cases = [
        ({"m.0.W": None}, "missing"),
        ({"extra": 1}, "unexpected"),
        ({"v.0.W": -np.ones_like(good["v.0.W"])}, ">= 0"),
        ({"m.2.b": np.full_like(good["m.2.b"], np.nan)}, "finite"),
        ({"m.2.b": np.zeros(7)}, "shape"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"n_steps": -1}, "n_steps"),
        ({"beta1": 1.0}, "beta1"),
        ({"lr": -1.0}, "lr"),
    ]
    for change, msg in cases:
        state = dict(good)
        for k, v in change.items():
            if v is None:
                del state[k]
            else:
                state[k] = v
        with pytest.raises(ValueError, match=msg):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert all(np.array_equal(after[k], before[k]) for k in before), change


def test_float32_parameters_stay_float32():
    params, grad = _problem(np.float32)
    opt = Adam(params)
    _run_ours(opt, grad, 3)
    assert all(v.dtype == np.float32 for v in params.values())
    assert all(v.dtype == np.float32 for s in opt.state.values() for v in s.values())
    with pytest.raises(TypeError, match="dtype"):
        opt.step({k: v.astype(np.float64) for k, v in params.items()})


def test_step_checks_names_and_shapes():
    params, _ = _problem()
    for opt in (Adam(params), SGD(params, lr=0.1)):
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        del grads["0.W"]
        with pytest.raises(ValueError, match=r"missing \['0.W'\]"):
            opt.step(grads)
        grads["0.W"] = np.zeros((1, 1))
        with pytest.raises(ValueError, match="shape"):
            opt.step(grads)
        assert opt.n_steps == 0


def test_hyper_parameter_checks():
    p = {"w": np.zeros(3)}
    with pytest.raises(ValueError, match="lr"):
        Adam(p, lr=-1e-3)
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="betas"):
        Adam(p, betas=0.9)
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, lr=0.1, momentum=1.5)
    with pytest.raises(TypeError, match="dict"):
        Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="C-contiguous"):
        Adam({"w": np.zeros((3, 2)).T})


def test_adam_trains_a_small_network():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    T = np.tanh(X @ rng.standard_normal((4, 2)))
    net = mlp([4, 16, 2], "tanh", rng=1)
    opt = Adam(net.named_parameters(), lr=0.01)
    losses = []
    for _ in range(100):
        net.zero_grad()
        value, cache = L.mse_forward(net.forward(X), T)
        net.backward(L.mse_backward(np.full(64, 1 / 64), cache), need_dx=False)
        opt.step(net.named_grads())
        losses.append(value.mean())
    assert losses[-1] < 0.1 * losses[0]
