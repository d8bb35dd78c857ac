"""probgen.nn.gradcheck: finite differences are accurate, wrong gradients are caught,
parameters are restored, the report is documented."""
import numpy as np
import pytest

from probgen.nn import losses as L
from probgen.nn.gradcheck import (
    GradcheckError,
    GradcheckReport,
    gradcheck,
    numerical_gradient,
    numerical_vjp,
    relative_error,
)
from probgen.nn.layers import mlp


def _closure(net, X, T, corrupt=None):
    """loss_and_grads of a Gaussian-likelihood MLP regression; ``corrupt(grads)`` plants a bug."""
    def fn():
        net.zero_grad()
        out = net.forward(X)
        value, cache = L.gaussian_nll_forward(T, out, 0.2)
        net.backward(L.gaussian_nll_backward(np.full(len(X), 1 / len(X)), cache)[0], need_dx=False)
        grads = {k: g.copy() for k, g in net.named_grads().items()}
        if corrupt is not None:
            corrupt(grads)
        return value.mean(), grads
    return fn


def _setup():
    net = mlp([5, 40, 3], "softplus", rng=0)
    rng = np.random.default_rng(1)
    return net, rng.standard_normal((12, 5)), rng.standard_normal((12, 3))


def test_correct_gradients_pass_in_both_modes():
    net, X, T = _setup()
    report = gradcheck(_closure(net, X, T), net.named_parameters(), rng=0, elementwise_max=50)
    assert isinstance(report, GradcheckReport) and report.passed
    assert report.modes == {"0.W": "directional", "0.b": "elementwise", "2.W": "directional",
                            "2.b": "elementwise"}
    # 1 analytic call, 2 per element (40 + 3) and 2 per direction (3 each for 2 tensors)
    assert report.n_evaluations == 1 + 2 * 43 + 2 * 3 * 2
    assert report.max_rel_error == max(report.rel_errors.values()) <= 1e-6
    tight = gradcheck(_closure(net, X, T), net.named_parameters(), rng=0, eps=1e-3, order=4,
                      rtol=1e-9)
    assert tight.max_rel_error <= 1e-9


@pytest.mark.parametrize("name,index,elementwise_max", [
    ("2.b", 1, 64),       # small tensor, elementwise
    ("0.W", (3, 17), 64),  # one entry of a 200-entry tensor, directional
])
def test_a_wrong_gradient_entry_is_caught(name, index, elementwise_max):
    net, X, T = _setup()

    def corrupt(grads):
        grads[name][index] += 0.1 * np.abs(grads[name]).max()

    with pytest.raises(GradcheckError) as info:
        gradcheck(_closure(net, X, T, corrupt), net.named_parameters(), rng=0,
                  elementwise_max=elementwise_max)
    report = info.value.report
    assert not report.passed
    assert max(report.rel_errors, key=report.rel_errors.get) == name
    assert report.rel_errors[name] > 1e-4
    assert "exceeds rtol" in str(info.value)
    quiet = gradcheck(_closure(net, X, T, corrupt), net.named_parameters(), rng=0,
                      elementwise_max=elementwise_max, raise_on_failure=False)
    assert not quiet.passed and quiet.max_rel_error > 1e-4


def test_a_scaled_gradient_is_caught_along_directions():
    net, X, T = _setup()

    def corrupt(grads):
        grads["0.W"] *= 1.001

    report = gradcheck(_closure(net, X, T, corrupt), net.named_parameters(), rng=0,
                       raise_on_failure=False)
    assert not report.passed and report.rel_errors["0.W"] > 1e-4


def test_parameters_are_restored_exactly_even_when_fn_raises():
    net, X, T = _setup()
    params = net.named_parameters()
    before = {k: v.copy() for k, v in params.items()}
    gradcheck(_closure(net, X, T), params, rng=0)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    calls = [0]
    inner = _closure(net, X, T)

    def flaky():
        calls[0] += 1
        if calls[0] == 5:
            raise FloatingPointError("boom")
        return inner()

    with pytest.raises(FloatingPointError):
        gradcheck(flaky, params, rng=0)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


def test_argument_checks():
    net, X, T = _setup()
    f32 = {"w": np.zeros(3, np.float32)}
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda: (0.0, {"w": np.zeros(3)}), f32)
    with pytest.raises(ValueError, match="no gradient"):
        gradcheck(lambda: (0.0, {}), {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="non-finite"):
        gradcheck(lambda: (np.nan, {"w": np.zeros(3)}), {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="order"):
        gradcheck(_closure(net, X, T), net.named_parameters(), order=3)
    with pytest.raises(ValueError, match="eps"):
        gradcheck(_closure(net, X, T), net.named_parameters(), eps=0.0)


def test_numerical_gradient_accuracy_by_order():
    x = np.linspace(-2, 2, 7)
    exact = np.cos(x) * np.exp(np.sin(x))
    g2 = numerical_gradient(lambda v: np.exp(np.sin(v)).sum(), x)
    g4 = numerical_gradient(lambda v: np.exp(np.sin(v)).sum(), x, eps=1e-3, order=4)
    assert relative_error(g2, exact) < 1e-8
    assert relative_error(g4, exact) < 1e-11
    assert relative_error(g4, exact) < relative_error(g2, exact)


def test_numerical_vjp_equals_jacobian_transpose_product():
    rng = np.random.default_rng(2)
    A, x, dy = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(4)
    labels = np.array([1, 2])
    dA, dx, none = numerical_vjp(lambda A, x, _: A @ x, [A, x, labels], dy)
    assert none is None
    assert relative_error(dx, A.T @ dy) < 1e-9
    assert relative_error(dA, np.outer(dy, x)) < 1e-9
    (only_x,) = numerical_vjp(lambda x: A @ x, [x], dy, wrt=[0])
    assert relative_error(only_x, A.T @ dy) < 1e-9


def test_relative_error_definition():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 2.2)
    assert relative_error([0.0], [1e-30]) == 1.0
    with pytest.raises(ValueError, match="shapes"):
        relative_error(np.zeros(2), np.zeros(3))
