"""GAN: gradients (finite differences, torch autograd), the two generator losses, the optimal
discriminator, mode coverage on a ring of Gaussians, reproducibility, dtype, persistence, checks."""
import time

import numpy as np
import pytest
from scipy import integrate, stats

from probgen._validation import NotFittedError
from probgen.models.gan import GAN, discriminator_loss, generator_loss
from probgen.nn.functional import sigmoid
from probgen.nn.gradcheck import gradcheck, relative_error

D, L = 3, 2


def _model(activation="tanh", loss="non_saturating", g_hidden=(5,), d_hidden=(6, 4), dtype=np.float64):
    gan = GAN(L, g_hidden, d_hidden, generator_loss=loss, activation=activation, rng=0, dtype=dtype).build(D)
    gen = np.random.default_rng(7)
    for name, p in gan.named_parameters().items():
        if name.endswith(".b"):
            p[...] = 0.3 * gen.standard_normal(p.shape)  # a generic point, away from relu kinks at 0
    return gan


def _part(gan, prefix):
    return {k: v for k, v in gan.named_parameters().items() if k.startswith(prefix + ".")}


def _data(N=7, M=6, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.standard_normal((M, L))


# --------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu", "relu"])
def test_discriminator_gradients_match_finite_differences(activation):
    gan = _model(activation)
    X, z = _data()
    gradcheck(lambda: gan.loss_and_grads(X, z=z, part="discriminator"), _part(gan, "discriminator"),
              rtol=1e-6, rng=0)


@pytest.mark.parametrize("loss", ["non_saturating", "minimax"])
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_generator_gradients_through_d_match_finite_differences(loss, activation):
    gan = _model(activation, loss)
    _, z = _data()
    gradcheck(lambda: gan.loss_and_grads(None, z=z, part="generator"), _part(gan, "generator"),
              rtol=1e-6, rng=0)


def _torch_net(torch, P, prefix, n_linear, act, h):
    for i in range(n_linear):
        h = h @ P[f"{prefix}.{2 * i}.W"] + P[f"{prefix}.{2 * i}.b"]
        if i < n_linear - 1:
            h = act(h)
    return h


@pytest.mark.parametrize("loss", ["non_saturating", "minimax"])
@pytest.mark.parametrize("activation", ["tanh", "leaky_relu", "relu"])
def test_gradients_match_torch_autograd(loss, activation):
    from _require import require_torch

    torch = require_torch()
    fn = torch.nn.functional
    act = {"tanh": torch.tanh, "relu": torch.relu, "leaky_relu": fn.leaky_relu}[activation]  # slope 0.01 both
    gan = _model(activation, loss)
    X, z = _data()

    def forward():
        P = {k: torch.tensor(v, requires_grad=True) for k, v in gan.named_parameters().items()}
        fake = _torch_net(torch, P, "generator", 2, act, torch.tensor(z))
        d = lambda x: _torch_net(torch, P, "discriminator", 3, act, x)[:, 0]  # noqa: E731
        return P, fake, d

    # discriminator: -[mean log D(x) + mean log(1 - D(G(z)))], G(z) held fixed
    P, fake, d = forward()
    t_loss = -(fn.logsigmoid(d(torch.tensor(X))).mean() + fn.logsigmoid(-d(fake.detach())).mean())
    t_loss.backward()
    loss_d, grads_d = gan.loss_and_grads(X, z=z, part="discriminator")
    assert set(grads_d) == set(_part(gan, "discriminator"))
    assert abs(loss_d - t_loss.item()) <= 1e-12 * abs(t_loss.item())
    for k, g in grads_d.items():
        assert relative_error(g, P[k].grad.numpy()) <= 1e-8, k

    # generator: gradient through D, D's parameters not updated
    P, fake, d = forward()
    logit = d(fake)
    t_loss = -fn.logsigmoid(logit).mean() if loss == "non_saturating" else fn.logsigmoid(-logit).mean()
    t_loss.backward()
    loss_g, grads_g = gan.loss_and_grads(None, z=z, part="generator")
    assert set(grads_g) == set(_part(gan, "generator"))
    assert abs(loss_g - t_loss.item()) <= 1e-12 * abs(t_loss.item())
    for k, g in grads_g.items():
        assert relative_error(g, P[k].grad.numpy()) <= 1e-8, k


def test_generator_pass_discards_the_discriminator_grads_and_z_fixes_the_loss():
    gan = _model()
    X, z = _data()
    gan.loss_and_grads(X, z=z, part="discriminator")
    before = {k: v.copy() for k, v in gan.named_parameters().items()}
    a = gan.loss_and_grads(None, z=z, part="generator")
    assert all(not g.any() for g in gan.discriminator.named_grads().values())
    b = gan.loss_and_grads(X, z=z, part="generator")  # X is not used by G's loss
    assert a[0] == b[0] and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    for k, v in gan.named_parameters().items():
        np.testing.assert_array_equal(v, before[k])
    c = gan.loss_and_grads(X, part="generator", rng=3)  # drawn noise: N rows from the given rng
    assert c[0] == gan.loss_and_grads(None, z=np.random.default_rng(3).standard_normal((7, L)),
                                      part="generator")[0]


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu", "relu"])
def test_input_gradient_equals_the_full_backward_and_leaves_parameter_grads_alone(activation):
    from probgen.models.gan import _input_gradient

    gan = _model(activation)
    X, _ = _data()
    dy = np.random.default_rng(5).standard_normal((X.shape[0], 1))
    gan.discriminator.forward(X)
    for g in gan.discriminator.named_grads().values():
        g[...] = 7.0  # sentinel: the input-only pass must not touch them
    dx = _input_gradient(gan.discriminator, dy)
    assert all(np.all(g == 7.0) for g in gan.discriminator.named_grads().values())
    gan.discriminator.zero_grad()
    np.testing.assert_allclose(dx, gan.discriminator.backward(dy), rtol=1e-14, atol=0)


# --------------------------------------------------------------------------- the two generator losses
def test_generator_losses_agree_in_direction_and_share_the_fixed_point():
    b = np.linspace(-30.0, 30.0, 601)
    _, d_mm = generator_loss(b, "minimax")
    _, d_ns = generator_loss(b, "non_saturating")
    # per logit: both strictly negative (G always pushes D(G(z)) up), ratio e^b, equal at D(G(z)) = 1/2
    assert np.all(d_mm < 0) and np.all(d_ns < 0)
    np.testing.assert_allclose(d_mm / d_ns, np.exp(b), rtol=1e-12)
    assert d_mm[300] == d_ns[300] == -0.5 / b.size
    # through the model, with one noise draw: the whole G gradients are proportional, factor e^b > 0
    gan = _model(loss="minimax")
    z1 = np.random.default_rng(5).standard_normal((1, L))
    b1 = gan.discriminator.forward(gan.generate(z1))[0, 0]
    _, g_mm = gan.loss_and_grads(None, z=z1, part="generator")
    gan.generator_loss = "non_saturating"
    _, g_ns = gan.loss_and_grads(None, z=z1, part="generator")
    for k in g_mm:
        np.testing.assert_allclose(g_mm[k], np.exp(b1) * g_ns[k], rtol=1e-10, atol=1e-15)
    # the fixed point of the game: data = G's samples and D = 1/2 everywhere is stationary for D and
    # for G under both losses, and D's loss there is log 4 [eq:gan-jsd] with JSD = 0
    X, z = _data()
    for p in _part(gan, "discriminator.4").values():
        p[...] = 0.0
    loss_d, grads_d = gan.loss_and_grads(gan.generate(z), z=z, part="discriminator")
    assert loss_d == pytest.approx(np.log(4.0), rel=1e-14)
    assert max(np.abs(g).max() for g in grads_d.values()) <= 1e-15
    for kind in ("minimax", "non_saturating"):
        gan.generator_loss = kind
        loss_g, grads_g = gan.loss_and_grads(None, z=z, part="generator")
        assert loss_g == pytest.approx(np.log(0.5) if kind == "minimax" else np.log(2.0), rel=1e-14)
        assert all(not g.any() for g in grads_g.values())


def test_minimax_loss_saturates_when_d_rejects_the_fakes():
    b = -np.array([1.0, 5.0, 10.0, 20.0, 40.0])
    _, d_mm = generator_loss(b, "minimax")
    _, d_ns = generator_loss(b, "non_saturating")
    M = b.size
    np.testing.assert_allclose(d_mm * M, -sigmoid(b), rtol=1e-14)  # -> 0 like e^b
    assert abs(d_mm[-1] * M) < 1e-17 and np.all(np.diff(np.abs(d_mm)) < 0)
    np.testing.assert_allclose(d_ns[1:] * M, -1.0, atol=1e-2)  # -> -1
    assert abs(d_ns[-1] * M + 1) < 1e-17
    # in the model: a discriminator that confidently rejects the fakes (bias -20, D(G(z)) ~ 2e-9)
    gan = _model()
    gan.named_parameters()["discriminator.4.b"][...] = -20.0
    _, z = _data(M=16)
    assert gan.discriminate(gan.generate(z)).max() < 1e-7
    norms = {}
    for kind in ("minimax", "non_saturating"):
        gan.generator_loss = kind
        norms[kind] = np.sqrt(sum((g ** 2).sum() for g in gan.loss_and_grads(None, z=z, part="generator")[1].values()))
    assert norms["non_saturating"] > 1e-3 and norms["minimax"] < 1e-6 * norms["non_saturating"]


# --------------------------------------------------------------------------- the optimal discriminator
def _jsd(mu):
    p, q = stats.norm(0, 1).pdf, stats.norm(mu, 1).pdf
    f = lambda x: 0.5 * p(x) * np.log(2 * p(x) / (p(x) + q(x))) + 0.5 * q(x) * np.log(2 * q(x) / (p(x) + q(x)))  # noqa: E731
    return integrate.quad(f, -12, 12 + mu, epsabs=1e-13)[0]


def test_optimal_discriminator_on_1d_gaussians():
    """p_data = N(0,1), p_g = N(mu,1) (an affine G); D* = p_data/(p_data+p_g) has the affine logit
    -mu x + mu^2/2, so a linear D holds it exactly.  Data and noise are quantile grids (a quadrature of
    both expectations, error ~1/N), so the code's loss is the population loss to ~1e-4."""
    mu, N = 1.5, 20000
    grid = stats.norm.ppf((np.arange(N) + 0.5) / N)[:, None]
    gan = GAN(1, (), (), rng=0).build(1)
    P = gan.named_parameters()
    P["generator.0.W"][...], P["generator.0.b"][...] = 1.0, mu
    P["discriminator.0.W"][...], P["discriminator.0.b"][...] = -mu, mu ** 2 / 2  # [eq:gan-optimal-d]
    x = np.linspace(-2, 3, 11)[:, None]
    p, q = stats.norm(0, 1).pdf(x[:, 0]), stats.norm(mu, 1).pdf(x[:, 0])
    np.testing.assert_allclose(gan.discriminate(x), p / (p + q), rtol=1e-12)
    loss, grads = gan.loss_and_grads(grid, z=grid, part="discriminator")
    assert loss == pytest.approx(np.log(4) - 2 * _jsd(mu), abs=1e-4)  # [eq:gan-jsd]
    assert max(np.abs(g).max() for g in grads.values()) < 1e-4  # stationary (population gradient is 0)
    rng = np.random.default_rng(0)
    star = {k: v.copy() for k, v in P.items()}
    for _ in range(5):  # the loss is convex in (W, b) (logistic regression): D* is its minimum
        for k in ("discriminator.0.W", "discriminator.0.b"):
            P[k][...] = star[k] + 0.05 * rng.standard_normal()
        assert gan.loss_and_grads(grid, z=grid, part="discriminator")[0] > loss
    # training D alone through the seam from a fresh start reaches D*
    from probgen.nn.optim import Adam

    P["discriminator.0.W"][...], P["discriminator.0.b"][...] = 0.3, -0.2
    sub = grid[::10]
    opt = Adam(_part(gan, "discriminator"), lr=0.05)
    for _ in range(600):
        opt.step(gan.loss_and_grads(sub, z=sub, part="discriminator")[1])
    assert P["discriminator.0.W"][0, 0] == pytest.approx(-mu, abs=0.02)
    assert P["discriminator.0.b"][0] == pytest.approx(mu ** 2 / 2, abs=0.02)


# --------------------------------------------------------------------------- training
def _ring(n, rng, std=0.05, radius=2.0):
    angles = 2 * np.pi * np.arange(8) / 8
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres[rng.integers(0, 8, n)] + std * rng.standard_normal((n, 2)), centres


def test_ring_of_eight_gaussians_modes_are_covered():
    std = 0.05
    X, centres = _ring(2000, np.random.default_rng(0), std)
    t0 = time.perf_counter()
    gan = GAN(2, (32, 32), (32, 32), rng=1).fit(X, epochs=200, batch_size=100, lr=5e-4, progress=False)
    elapsed = time.perf_counter() - t0
    S = gan.sample(2000, rng=1)
    dist = np.linalg.norm(S[:, None, :] - centres[None], axis=2)
    near, nearest = dist.min(axis=1) < 3 * std, dist.argmin(axis=1)
    hits = np.array([np.mean(near & (nearest == j)) for j in range(8)])
    assert (hits >= 0.01).sum() >= 6, (hits, elapsed)
    h = gan.history_
    assert len(h["d_loss"]) == 200 and all(0 < v < 1 for v in h["d_real"] + h["d_fake"])


def test_seeds_reproduce_float32_is_kept_and_save_load_round_trips(tmp_path):
    X, _ = _ring(300, np.random.default_rng(1))
    kw = dict(latent_dim=2, generator_hidden=(8,), discriminator_hidden=(8,), k=2)
    a = GAN(**kw, rng=3).fit(X, epochs=3, batch_size=50, progress=False)
    b = GAN(**kw, rng=3).fit(X, epochs=3, batch_size=50, progress=False)
    c = GAN(**kw, rng=4).fit(X, epochs=3, batch_size=50, progress=False)
    assert a.history_ == b.history_ and a.history_ != c.history_
    for k, p in a.named_parameters().items():
        np.testing.assert_array_equal(p, b.named_parameters()[k])
    np.testing.assert_array_equal(a.sample(5, rng=0), b.sample(5, rng=0))
    f = GAN(**kw, rng=3, dtype=np.float32).fit(X, epochs=2, batch_size=50, progress=False)
    z = np.zeros((4, 2))
    outs = [f.sample(4, rng=0), f.generate(z), f.discriminate(X[:4])]
    outs += list(f.loss_and_grads(X[:4], part="discriminator", z=z)[1].values())
    outs += list(f.loss_and_grads(None, part="generator", z=z)[1].values())
    assert all(o.dtype == np.float32 for o in outs)
    assert all(p.dtype == np.float32 for p in f.named_parameters().values())
    f.save(tmp_path / "gan.npz")
    back = GAN.load(tmp_path / "gan.npz")
    assert back.dtype == np.float32 and back.k == 2 and back.history_ == f.history_
    np.testing.assert_array_equal(back.sample(6, rng=2), f.sample(6, rng=2))
    np.testing.assert_array_equal(back.discriminate(X), f.discriminate(X))
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        GAN.load(tmp_path / "bad.npz")


def test_bad_input_is_refused_clearly():
    with pytest.raises(NotFittedError, match="fit"):
        GAN().sample(3)
    gan = _model()
    X, z = _data()
    X[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        gan.loss_and_grads(X, z=z, part="discriminator")
    with pytest.raises(ValueError, match="features"):
        gan.discriminate(np.zeros((3, D + 1)))
    with pytest.raises(ValueError, match="z must have 2 features"):
        gan.loss_and_grads(None, z=np.zeros((3, 5)), part="generator")
    with pytest.raises(ValueError, match="needs z"):
        gan.loss_and_grads(None, part="generator")
    with pytest.raises(ValueError, match="part"):
        gan.loss_and_grads(X, z=z, part="both")
    with pytest.raises(ValueError, match="kind"):
        generator_loss(np.zeros(3), "wasserstein")
    with pytest.raises(ValueError, match="2-D"):
        gan.fit(np.zeros(5), epochs=1, progress=False)
    for kwargs, exc in [({"latent_dim": 0}, ValueError), ({"activation": "gelu"}, ValueError),
                        ({"generator_loss": "hinge"}, ValueError), ({"k": 0}, ValueError),
                        ({"generator_hidden": "big"}, TypeError), ({"dtype": np.float16}, TypeError),
                        ({"rng": "seed"}, TypeError)]:
        with pytest.raises(exc):
            GAN(**kwargs)
    loss, d_real, d_fake = discriminator_loss(np.zeros(2), np.zeros(3))
    assert loss == pytest.approx(2 * np.log(2)) and d_real.shape == (2,) and d_fake.shape == (3,)
