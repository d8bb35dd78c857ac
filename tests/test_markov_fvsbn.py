"""MarkovChain, FVSBN and count_parameters: counts, gradients (finite differences, torch), normalisation,
sampling, training, persistence and input checks."""
import itertools

import numpy as np
import pytest
from scipy import stats

from probgen._validation import NotFittedError
from probgen.models.fvsbn import FVSBN
from probgen.models.markov import MarkovChain, count_parameters, markov_counts
from probgen.models.nade import NADE
from probgen.nn.gradcheck import gradcheck, relative_error


def _all_binary(D):
    return np.array(list(itertools.product([0, 1], repeat=D)), dtype=np.float64)


def _data(N, D, seed=0, p=0.4):
    return (np.random.default_rng(seed).random((N, D)) < p).astype(np.uint8)


def _random_model(kind, D, seed=0, scale=0.7, dtype=np.float64):
    rng = np.random.default_rng(seed)
    model = {"markov": MarkovChain(rng=seed, dtype=dtype), "fvsbn": FVSBN(rng=seed, dtype=dtype)}[kind].build(D)
    for _name, p in model.named_parameters().items():
        p[...] = scale * rng.standard_normal(p.shape)
    if kind == "fvsbn":
        model.named_parameters()["W"][...] = np.tril(model.named_parameters()["W"], -1)
    return model


# --------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("n", range(1, 11))
def test_counts_by_enumeration(n):
    configs = list(itertools.product([0, 1], repeat=n))
    # full joint: one probability per configuration, minus normalisation
    assert count_parameters("full_joint", n) == len(configs) - 1
    # chain rule: one Bernoulli parameter per conditioning context x_{<d} of every d
    contexts = sum(len({c[:d] for c in configs}) for d in range(n))
    assert count_parameters("chain_rule", n) == contexts == 2 ** n - 1
    # Markov: p(x_1) plus one parameter per value of x_{d-1} for each d >= 2
    assert count_parameters("markov", n) == 1 + sum(len({c[d - 1] for c in configs}) for d in range(1, n)) == 2 * n - 1
    assert count_parameters("fvsbn", n) == n + sum(range(n)) == n * (n + 1) // 2
    assert count_parameters("independent", n) == n
    assert count_parameters("nade", n, n_hidden=3) == 3 * n + n * 3 + n + 3


def test_counts_are_exact_for_mnist_size():
    assert count_parameters("full_joint", 784) == 2 ** 784 - 1  # a Python int, not a rounded float
    assert count_parameters("markov", 784) == 1567
    assert count_parameters("fvsbn", 784) == 307_720
    assert count_parameters("nade", 784, n_hidden=500) == 784_000 + 784 + 500


@pytest.mark.parametrize("D", [1, 2, 7])
def test_models_have_the_counted_parameters(D):
    m = MarkovChain().build(D)
    assert m.n_parameters_ == sum(p.size for p in m.named_parameters().values()) == count_parameters("markov", D)
    f = FVSBN().build(D)
    free = int(np.tril(np.ones((D, D)), -1).sum()) + D  # the strictly lower triangle of W, and b
    assert f.n_parameters_ == free == count_parameters("fvsbn", D)
    nade = NADE(n_hidden=3).build(D)
    assert nade.n_parameters_ == sum(p.size for p in nade.named_parameters().values()) \
        == count_parameters("nade", D, n_hidden=3)


def test_count_parameters_bad_arguments():
    with pytest.raises(ValueError, match="model_kind"):
        count_parameters("pixelcnn", 4)
    with pytest.raises(ValueError, match="n_hidden"):
        count_parameters("nade", 4)
    with pytest.raises(ValueError, match="n_hidden"):
        count_parameters("fvsbn", 4, n_hidden=3)
    with pytest.raises(ValueError, match="n"):
        count_parameters("markov", 0)
    with pytest.raises(TypeError, match="n"):
        count_parameters("markov", 2.5)


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("kind", ["markov", "fvsbn"])
def test_gradients_match_finite_differences(kind):
    model = _random_model(kind, 6, seed=1)
    X = _data(9, 6, seed=2)
    params = model.named_parameters()
    if kind == "fvsbn":
        # differentiate with respect to the free entries only: the masked ones have zero gradient
        loss, grads = model.loss_and_grads(X)
        assert np.all(np.triu(grads["W"]) == 0)
    gradcheck(lambda: model.loss_and_grads(X), params, eps=1e-3, order=4, rtol=1e-8)


@pytest.mark.parametrize("kind", ["markov", "fvsbn"])
def test_gradients_match_torch(kind):
    from _require import require_torch

    torch = require_torch()
    D = 7
    model = _random_model(kind, D, seed=3)
    X = _data(11, D, seed=4)
    loss, grads = model.loss_and_grads(X)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in model.named_parameters().items()}
    x = torch.tensor(X, dtype=torch.float64)
    if kind == "markov":
        logits = t["b"] + torch.cat([torch.zeros(11, 1, dtype=torch.float64), x[:, :-1] * t["w"]], 1)
    else:
        mask = torch.tril(torch.ones(D, D, dtype=torch.float64), -1)
        logits = x @ (t["W"] * mask).T + t["b"]
    tl = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 11
    tl.backward()
    assert abs(loss - tl.item()) <= 1e-12 * abs(tl.item())
    for k in t:
        assert relative_error(grads[k], t[k].grad.numpy()) <= 1e-10, k


def test_markov_closed_form_is_the_maximum_likelihood():
    X = _data(200, 5, seed=5)
    model = MarkovChain(alpha=0.0).fit(X)
    _, grads = model.loss_and_grads(X)
    # zero gradient at the counting estimate (the NLL is convex in the logits)
    assert max(np.abs(g).max() for g in grads.values()) < 1e-12
    # and the conditionals are the empirical frequencies
    b, w = model.named_parameters()["b"], model.named_parameters()["w"]
    sel = X[:, 2] == 1
    assert np.isclose(1 / (1 + np.exp(-(b[3] + w[2]))), X[sel, 3].mean(), rtol=1e-12)
    assert np.isclose(1 / (1 + np.exp(-b[0])), X[:, 0].mean(), rtol=1e-12)


def test_markov_laplace_smoothing():
    X = np.array([[1, 1], [1, 1], [0, 0]], dtype=np.uint8)
    b, w = markov_counts(X, alpha=1.0)
    p1 = (2 + 1) / (3 + 2)              # p(x_1 = 1)
    p2_given1 = (2 + 1) / (2 + 2)       # p(x_2 = 1 | x_1 = 1)
    p2_given0 = (0 + 1) / (1 + 2)       # p(x_2 = 1 | x_1 = 0)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose([b[0], b[1], b[1] + w[0]], [logit(p1), logit(p2_given0), logit(p2_given1)],
                               rtol=1e-13)
    with pytest.raises(ValueError, match="alpha > 0"):
        MarkovChain(alpha=0.0).fit(X)  # p(x_2 = 1 | x_1 = 0) = 0/1: infinite logit


# --------------------------------------------------------------------------- exact normalisation
@pytest.mark.parametrize("kind", ["markov", "fvsbn"])
def test_probabilities_sum_to_one(kind):
    D = 10
    model = _random_model(kind, D, seed=6, scale=1.5)
    logp = model.score_samples(_all_binary(D))
    total = np.exp(logp).sum()
    assert abs(total - 1.0) < 1e-12


def test_conditional_logits_are_autoregressive():
    D = 8
    model = _random_model("fvsbn", D, seed=7)
    rng = np.random.default_rng(8)
    X = _data(5, D, seed=9)
    L = model.conditional_logits(X)
    for d in range(D):
        Y = X.copy()
        Y[:, d:] = rng.integers(0, 2, size=Y[:, d:].shape)
        np.testing.assert_array_equal(model.conditional_logits(Y)[:, :d + 1], L[:, :d + 1])
    # Markov: logit d depends on x_{d-1} only
    m = _random_model("markov", D, seed=7)
    Y = X.copy()
    Y[:, :4] = 1 - Y[:, :4]
    np.testing.assert_array_equal(m.conditional_logits(Y)[:, 5:], m.conditional_logits(X)[:, 5:])


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("kind", ["markov", "fvsbn"])
def test_samples_follow_the_model(kind):
    D, n = 4, 40_000
    model = _random_model(kind, D, seed=10, scale=0.8)
    probs = np.exp(model.score_samples(_all_binary(D)))
    S = model.sample(n, rng=11)
    assert S.shape == (n, D) and set(np.unique(S)) <= {0.0, 1.0}
    counts = np.bincount(S.astype(int) @ (2 ** np.arange(D - 1, -1, -1)), minlength=2 ** D)
    assert probs.min() * n > 20
    p_value = stats.chisquare(counts, probs / probs.sum() * n).pvalue
    assert p_value > 1e-4


# --------------------------------------------------------------------------- training
def test_fvsbn_training_lowers_the_loss_and_keeps_the_mask():
    from probgen.datasets import load_digits

    X = load_digits().binary
    model = FVSBN(init_scale=0.01, rng=0).build(64)
    before = -model.score(X)
    model.fit(X, epochs=3, batch_size=64, lr=1e-2, progress=False, validation=X[:200])
    # ``fit`` on a built model continues from its parameters (here the random start)
    assert -model.score(X) < before
    h = model.history_["train_nll"]
    assert h[-1] < h[0] and len(model.history_["validation_nll"]) == 3
    assert np.all(np.triu(model.named_parameters()["W"]) == 0)


def test_markov_gradient_fit_approaches_counts():
    X = _data(400, 5, seed=12)
    exact = MarkovChain(alpha=0.0).fit(X)
    sgd = MarkovChain(rng=0).fit(X, method="adam", epochs=150, batch_size=400, lr=0.1, progress=False)
    assert -sgd.score(X) - (-exact.score(X)) < 1e-3
    assert -sgd.score(X) >= -exact.score(X) - 1e-12  # nothing beats the MLE


def test_seeds_reproduce():
    X = _data(60, 6, seed=13)
    a = FVSBN(init_scale=0.1, rng=5).fit(X, epochs=2, batch_size=16, progress=False)
    b = FVSBN(init_scale=0.1, rng=5).fit(X, epochs=2, batch_size=16, progress=False)
    c = FVSBN(init_scale=0.1, rng=6).fit(X, epochs=2, batch_size=16, progress=False)
    for k in a.named_parameters():
        np.testing.assert_array_equal(a.named_parameters()[k], b.named_parameters()[k])
    assert not np.array_equal(a.named_parameters()["W"], c.named_parameters()["W"])
    np.testing.assert_array_equal(a.sample(20, rng=1), b.sample(20, rng=1))
    m1, m2 = MarkovChain(rng=3).fit(X), MarkovChain(rng=3).fit(X)
    np.testing.assert_array_equal(m1.sample(30), m2.sample(30))


@pytest.mark.parametrize("cls", [MarkovChain, FVSBN])
def test_float32_end_to_end(cls):
    X = _data(40, 6, seed=14)
    model = cls(rng=0, dtype=np.float32)
    model.fit(X, epochs=1, batch_size=8, progress=False) if cls is FVSBN else model.fit(X)
    assert all(p.dtype == np.float32 for p in model.named_parameters().values())
    assert model.score_samples(X).dtype == np.float32
    assert model.conditional_logits(X).dtype == np.float32
    assert model.sample(5).dtype == np.float32
    _, grads = model.loss_and_grads(X)
    assert all(g.dtype == np.float32 for g in grads.values())
    ref = cls(rng=0).fit(X, epochs=1, batch_size=8, progress=False) if cls is FVSBN else cls(rng=0).fit(X)
    np.testing.assert_allclose(model.score_samples(X), ref.score_samples(X), rtol=1e-4)


@pytest.mark.parametrize("cls", [MarkovChain, FVSBN])
def test_save_load_round_trip(cls, tmp_path):
    X = _data(50, 5, seed=15)
    model = cls(rng=2, dtype=np.float32)
    model.fit(X, epochs=2, batch_size=10, progress=False) if cls is FVSBN else model.fit(X)
    model.save(tmp_path / "m.npz")
    back = cls.load(tmp_path / "m.npz")
    assert type(back) is cls and back.dtype == np.float32 and back.n_features_in_ == 5
    np.testing.assert_array_equal(back.score_samples(X), model.score_samples(X))
    assert back.history_ == model.history_
    np.testing.assert_array_equal(back.sample(7), model.sample(7))  # the generator state travels too
    other = MarkovChain if cls is FVSBN else FVSBN
    with pytest.raises(ValueError, match="not a saved"):
        other.load(tmp_path / "m.npz")


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [MarkovChain, FVSBN])
def test_bad_input(cls):
    X = _data(20, 4)
    with pytest.raises(NotFittedError):
        cls().score_samples(X)
    with pytest.raises(NotFittedError):
        cls().sample(3)
    with pytest.raises(ValueError, match="probgen.datasets.binarize"):
        cls().fit(np.random.default_rng(0).random((10, 4)))
    model = cls(rng=0).fit(X, epochs=1, progress=False) if cls is FVSBN else cls().fit(X)
    with pytest.raises(ValueError, match="4 features"):
        model.score_samples(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="probgen.datasets.binarize"):
        model.score_samples(X * 2)
    with pytest.raises(ValueError, match="NaN"):
        model.conditional_logits(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="2-D"):
        model.loss_and_grads(np.zeros(4))
    with pytest.raises(ValueError, match="n"):
        model.sample(0)
    with pytest.raises(TypeError, match="dtype"):
        cls(dtype=np.int32)
    # booleans and uint8 are binary data too
    np.testing.assert_array_equal(model.score_samples(X.astype(bool)), model.score_samples(X))


def test_markov_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        MarkovChain(alpha=-1.0)
    with pytest.raises(ValueError, match="method"):
        MarkovChain().fit(_data(5, 3), method="em")
