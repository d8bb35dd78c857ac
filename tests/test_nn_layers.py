"""probgen.nn.layers and probgen.nn.init: layers against torch.nn and finite differences,
accumulation semantics, dotted names mapping to live arrays, deterministic initialisation."""
import numpy as np
import pytest

from probgen.nn import init as I
from probgen.nn import losses as L
from probgen.nn.gradcheck import gradcheck, numerical_vjp, relative_error
from probgen.nn.layers import LeakyReLU, Linear, Module, ReLU, Sequential, Sigmoid, Softplus, Tanh, mlp

TOL_TORCH = 1e-12
FD = dict(eps=1e-3, order=4)


def _torch_twin(layer, torch):
    """The torch.nn module equal to ``layer``, float64, weights copied (W is transposed)."""
    nn = torch.nn
    if isinstance(layer, Linear):
        t = nn.Linear(layer.in_features, layer.out_features).double()
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
            t.bias.copy_(torch.from_numpy(layer.params["b"]))
        return t
    if isinstance(layer, Sequential):
        return nn.Sequential(*[_torch_twin(child, torch) for child in layer.children().values()])
    if isinstance(layer, LeakyReLU):
        return nn.LeakyReLU(layer.slope)
    return {ReLU: nn.ReLU, Tanh: nn.Tanh, Sigmoid: nn.Sigmoid, Softplus: nn.Softplus}[type(layer)]()


def _torch_grads(tmod):
    """Our names for torch's parameter grads ("0.weight" -> "0.W" transposed)."""
    out = {}
    for name, p in tmod.named_parameters():
        ours = name.replace("weight", "W").replace("bias", "b")
        out[ours] = p.grad.numpy().T if name.endswith("weight") else p.grad.numpy()
    return out


def _layers():
    return {
        "linear": Linear(5, 3, rng=0),
        "relu": ReLU(), "leaky_relu": LeakyReLU(0.1), "tanh": Tanh(), "sigmoid": Sigmoid(),
        "softplus": Softplus(),
        "mlp_relu": mlp([5, 8, 6, 3], "relu", rng=1),
        "mlp_tanh": mlp([5, 7, 3], "tanh", rng=2, final_activation="sigmoid"),
    }


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_matches_torch_module(name):
    from _require import require_torch
    torch = require_torch()
    layer = _layers()[name]
    tmod = _torch_twin(layer, torch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 5)) + 0.01  # no exact zeros for the kinks
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = tmod(xt)
    yt.backward(torch.tensor(dy))
    assert relative_error(y, yt.detach().numpy()) <= TOL_TORCH
    assert relative_error(dx, xt.grad.numpy()) <= TOL_TORCH
    tg = _torch_grads(tmod)
    ours = layer.named_grads()
    assert set(ours) == set(tg)
    for k in ours:
        assert relative_error(ours[k], tg[k]) <= TOL_TORCH, k


@pytest.mark.parametrize("name", list(_layers()))
def test_layer_matches_finite_differences(name):
    layer = _layers()[name]
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 5))
    x += 0.05 * np.sign(x)
    w = rng.standard_normal(layer.forward(x).shape)

    def loss_and_grads():
        layer.zero_grad()
        y = layer.forward(x)
        layer.backward(w)
        return float(np.sum(w * y)), layer.named_grads()

    if layer.named_parameters():
        report = gradcheck(loss_and_grads, layer.named_parameters(), elementwise_max=10**6,
                           rtol=1e-8, **FD)
        assert report.max_rel_error <= 1e-8
        assert set(report.modes.values()) == {"elementwise"}
    layer.forward(x)
    dx = layer.backward(w)
    (num,) = numerical_vjp(lambda x: layer.forward(x), [x], w, **FD)
    assert relative_error(dx, num) <= 1e-8


def test_mlp_loss_gradcheck_along_random_directions():
    net = mlp([6, 16, 4], "tanh", rng=5)
    rng = np.random.default_rng(6)
    X, T = rng.standard_normal((10, 6)), rng.integers(0, 4, 10)

    def loss_and_grads():
        net.zero_grad()
        value, cache = L.categorical_nll_forward(net.forward(X), T)
        net.backward(L.categorical_nll_backward(np.full(10, 0.1), cache), need_dx=False)
        return value.mean(), net.named_grads()

    report = gradcheck(loss_and_grads, net.named_parameters(), rng=0, elementwise_max=8,
                       directions=4, rtol=1e-8, **FD)
    assert report.modes == {"0.W": "directional", "0.b": "directional", "2.W": "directional",
                            "2.b": "elementwise"}


def test_gradients_accumulate_until_zero_grad():
    net = mlp([3, 4, 2], "relu", rng=0)
    x, dy = np.random.default_rng(1).standard_normal((5, 3)), np.ones((5, 2))
    net.forward(x)
    net.backward(dy)
    once = {k: v.copy() for k, v in net.named_grads().items()}
    live = net.named_grads()
    net.backward(dy)
    for k, g in net.named_grads().items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-15)
        assert g is live[k]
    net.zero_grad()
    for k, g in net.named_grads().items():
        assert g is live[k] and not g.any()


def test_named_parameters_are_live_and_dotted():
    class AE(Module):
        def __init__(self):
            super().__init__()
            self.encoder = Sequential({"fc1": Linear(4, 3, rng=0), "act": Tanh(), "fc2": Linear(3, 2, rng=1)})
            self.decoder = mlp([2, 4], rng=2)

        def children(self):
            return {"encoder": self.encoder, "decoder": self.decoder}

    model = AE()
    params, grads = model.named_parameters(), model.named_grads()
    assert list(params) == ["encoder.fc1.W", "encoder.fc1.b", "encoder.fc2.W", "encoder.fc2.b",
                            "decoder.0.W", "decoder.0.b"]
    assert list(grads) == list(params)
    assert model.n_parameters() == 4 * 3 + 3 + 3 * 2 + 2 + 2 * 4 + 4
    x = np.ones((1, 4))
    before = model.encoder.forward(x)
    params["encoder.fc2.b"][:] = 10.0
    assert np.allclose(model.encoder.forward(x), before + 10.0)
    assert params["encoder.fc1.W"] is model.encoder["fc1"].params["W"]
    assert list(mlp([3, 4, 2]).named_parameters(prefix="dec")) == ["dec.0.W", "dec.0.b", "dec.2.W", "dec.2.b"]


def test_load_parameters_all_or_nothing():
    net = mlp([3, 4, 2], rng=0)
    other = mlp([3, 4, 2], rng=1)
    net.load_parameters(other.named_parameters())
    for k, v in net.named_parameters().items():
        np.testing.assert_array_equal(v, other.named_parameters()[k])
    snapshot = {k: v.copy() for k, v in net.named_parameters().items()}
    bad = dict(mlp([3, 4, 2], rng=2).named_parameters())
    bad["2.b"] = np.zeros(3)
    with pytest.raises(ValueError, match="2.b"):
        net.load_parameters(bad)
    bad["2.b"] = np.array([0.0, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        net.load_parameters(bad)
    del bad["2.b"]
    with pytest.raises(ValueError, match="missing"):
        net.load_parameters(bad)
    for k, v in net.named_parameters().items():
        np.testing.assert_array_equal(v, snapshot[k])


def test_linear_accumulates_for_any_memory_layout():
    """The in-place BLAS accumulation equals x.T @ dy for strided inputs and gradient arrays."""
    rng = np.random.default_rng(9)
    lin = Linear(4, 3, rng=0)
    x = rng.standard_normal((4, 6)).T  # Fortran-ordered (6, 4)
    dy = rng.standard_normal((3, 6)).T
    lin.grads["W"] = np.asfortranarray(np.ones((4, 3)))  # not C-contiguous: BLAS copies
    for _ in range(2):
        lin.forward(x)
        dx = lin.backward(dy)
    np.testing.assert_allclose(lin.grads["W"], 1 + 2 * x.T @ dy, rtol=1e-14)
    np.testing.assert_allclose(lin.grads["b"], 2 * dy.sum(0), rtol=1e-14)
    np.testing.assert_allclose(dx, dy @ lin.params["W"].T, rtol=1e-14)
    lin.forward(np.zeros((0, 4)))  # an empty batch gives empty outputs and adds nothing
    assert lin.backward(np.zeros((0, 3))).shape == (0, 4)
    np.testing.assert_allclose(lin.grads["W"], 1 + 2 * x.T @ dy, rtol=1e-14)


def test_linear_writes_after_zero_grad_and_adds_after_that():
    """The first backward after zero_grad writes x.T dy; a second one adds to it (the same arrays)."""
    rng = np.random.default_rng(10)
    lin = Linear(5, 4, rng=0, dtype=np.float32)
    x, dy = rng.standard_normal((7, 5)).astype(np.float32), rng.standard_normal((7, 4)).astype(np.float32)
    GW, Gb = lin.grads["W"], lin.grads["b"]
    for passes in (1, 2, 3):
        lin.zero_grad()
        for _ in range(passes):
            lin.forward(x)
            lin.backward(dy)
        assert lin.grads["W"] is GW and lin.grads["b"] is Gb
        np.testing.assert_allclose(GW, passes * (x.T.astype(np.float64) @ dy), rtol=1e-5)
        np.testing.assert_allclose(Gb, passes * dy.sum(0, dtype=np.float64), rtol=1e-5)


def test_prepare_backward_skips_the_fill_but_gives_zero_grad_results():
    """A model's private reset before its one backward: stale gradient values never leak in."""
    net = mlp([3, 6, 4, 2], "tanh", rng=0)
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    net.zero_grad()
    net.forward(x)
    net.backward(dy, need_dx=False)
    expected = {k: v.copy() for k, v in net.named_grads().items()}
    arrays = net.named_grads()
    for g in arrays.values():
        g.fill(123.0)  # stale values from some earlier step
    net._prepare_backward()
    net.forward(x)
    net.backward(dy, need_dx=False)
    for k, g in net.named_grads().items():
        assert g is arrays[k]
        np.testing.assert_array_equal(g, expected[k])


def test_sequential_need_dx_false_returns_none_with_same_param_grads():
    net = mlp([3, 5, 2], "softplus", rng=0)
    x, dy = np.random.default_rng(1).standard_normal((4, 3)), np.ones((4, 2))
    net.forward(x)
    dx = net.backward(dy)
    full = {k: v.copy() for k, v in net.named_grads().items()}
    net.zero_grad()
    assert net.backward(dy, need_dx=False) is None
    for k, g in net.named_grads().items():
        np.testing.assert_array_equal(g, full[k])
    assert dx.shape == x.shape


def test_float32_end_to_end():
    net = mlp([3, 5, 2], "leaky_relu", rng=0, dtype=np.float32)
    x = np.ones((4, 3), np.float32)
    y = net.forward(x)
    dx = net.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == np.float32
    assert all(v.dtype == np.float32 for v in net.named_parameters().values())
    assert all(v.dtype == np.float32 for v in net.named_grads().values())
    with pytest.raises(TypeError, match="float32"):
        net.forward(x.astype(np.float64))


def test_layer_errors():
    with pytest.raises(RuntimeError, match="before forward"):
        Linear(2, 3).backward(np.ones((1, 3)))
    with pytest.raises(RuntimeError, match="before forward"):
        ReLU().backward(np.ones(3))
    lin = Linear(2, 3, rng=0)
    lin.forward(np.ones((4, 2)))
    with pytest.raises(ValueError, match="shape"):
        lin.backward(np.ones((1, 3)))  # would broadcast: must be refused
    with pytest.raises(ValueError, match="sizes"):
        mlp([3])
    with pytest.raises(ValueError, match="activation"):
        mlp([3, 2], "gelu")
    with pytest.raises(ValueError, match="init"):
        Linear(2, 3, init="xavier")
    with pytest.raises(TypeError, match="in_features"):
        Linear(2.5, 3)
    with pytest.raises(TypeError, match="dtype"):
        Linear(2, 3, dtype=np.float16)
    with pytest.raises(TypeError, match="Module"):
        Sequential(Linear(2, 3), "relu")
    with pytest.raises(ValueError, match="'.'"):
        Sequential({"a.b": ReLU()})


# --------------------------------------------------------------------------- initialisation
def test_initialisation_is_deterministic_from_a_seed():
    a, b, c = mlp([4, 6, 3], rng=7), mlp([4, 6, 3], rng=7), mlp([4, 6, 3], rng=8)
    f32 = mlp([4, 6, 3], rng=7, dtype=np.float32)
    for k, v in a.named_parameters().items():
        np.testing.assert_array_equal(v, b.named_parameters()[k])
        np.testing.assert_array_equal(f32.named_parameters()[k], v.astype(np.float32))
    assert not np.array_equal(a.named_parameters()["0.W"], c.named_parameters()["0.W"])
    gen = np.random.default_rng(3)
    w1 = I.he_normal(4, 5, gen)
    w2 = I.he_normal(4, 5, gen)
    assert not np.array_equal(w1, w2)  # one generator, successive draws
    np.testing.assert_array_equal(w1, I.he_normal(4, 5, np.random.default_rng(3)))


@pytest.mark.parametrize("name,var,bound", [
    ("glorot_uniform", 2 / (300 + 500), np.sqrt(6 / 800)),
    ("glorot_normal", 2 / (300 + 500), None),
    ("he_uniform", 2 / 300, np.sqrt(6 / 300)),
    ("he_normal", 2 / 300, None),
])
def test_initialiser_statistics(name, var, bound):
    W = I.initialize(name, 300, 500, 0)
    n = W.size
    # the sample variance of n draws has relative standard error ~ sqrt(2/n) (normal) or less (uniform)
    assert abs(W.var() / var - 1) < 5 * np.sqrt(2 / n)
    assert abs(W.mean()) < 5 * np.sqrt(var / n)
    if bound is not None:
        assert np.abs(W).max() <= bound and np.abs(W).max() > 0.99 * bound
    assert W.shape == (300, 500) and W.dtype == np.float64
    assert I.initialize(name, 3, 2, 0, np.float32).dtype == np.float32


def test_mlp_default_init_follows_activation():
    assert mlp([3, 4, 2], "relu")[0].init == "he_normal"
    assert mlp([3, 4, 2], "tanh")[0].init == "glorot_uniform"
    net = mlp([3, 4, 2], "tanh", init="he_uniform")
    assert net[0].init == net[2].init == "he_uniform"
    assert [type(m).__name__ for m in net.children().values()] == ["Linear", "Tanh", "Linear"]
