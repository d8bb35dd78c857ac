"""HierarchicalVAE, bottom-up and top-down inference: exact gradients (5-point differences, torch autograd), the
estimators against scipy and 2-D quadrature, the IWAE bound's ordering, training, persistence and input checks."""
import dataclasses
import functools

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logsumexp

from probgen._validation import NotFittedError
from probgen.models._hvae_backward import Workspace, log_weights
from probgen.models.hvae import HierarchicalVAE
from probgen.nn.gradcheck import gradcheck, relative_error

D = 10


def _binary(N, rng, p=0.3, d=D):
    return (rng.random((N, d)) < p).astype(np.float64)


def _model(latent_dims=(4, 3), hidden=((6, 5), (5,)), estimator="analytic", n_samples=1, activation="tanh", d=D,
           rng=0, bias_scale=0.3, inference="bottom_up"):
    m = HierarchicalVAE(latent_dims=latent_dims, hidden=hidden, estimator=estimator, n_samples=n_samples,
                        activation=activation, rng=rng, inference=inference).build(d)
    gen = np.random.default_rng(100)  # generic (non-zero) biases
    for name, p in m.named_parameters().items():
        if not name.endswith(".W"):
            p[...] = bias_scale * gen.standard_normal(p.shape)
    return m


def _eps(m, N, rng, squeeze=False):
    L, (Z1, Z2) = m.n_samples, m.latent_dims
    e1, e2 = rng.standard_normal((L, N, Z1)), rng.standard_normal((L, N, Z2))
    return (e1[0], e2[0]) if squeeze else (e1, e2)


CASES = [  # (latent_dims, hidden, estimator, n_samples, activation)
    ((4, 3), ((6, 5), (5,)), "analytic", 1, "tanh"),
    ((4, 3), ((6, 5), (5,)), "mc", 1, "tanh"),
    ((3, 2), (5,), "analytic", 3, "relu"),
    ((3, 2), ((4,), (3, 4)), "mc", 2, "tanh"),
    ((2, 2), ((), ()), "analytic", 2, "tanh"),  # linear networks (top-down: d = x)
]
INFERENCES = ["bottom_up", "top_down"]


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("inference", INFERENCES)
@pytest.mark.parametrize("z,hidden,est,L,act", CASES)
def test_gradients_match_five_point_differences(z, hidden, est, L, act, inference):
    rng = np.random.default_rng(1)
    m = _model(z, hidden, est, L, act, inference=inference)
    X = _binary(5, rng)
    eps = _eps(m, 5, rng)
    # 5-point stencil: truncation O(h^4) ~ 1e-12 at h = 1e-3, round-off ~ 1e-16 / 1e-3.  ReLU is only piecewise
    # smooth: a difference is an oracle only if no pre-activation changes sign within +-2h of a weight's change
    # (top-down, a q_z1 pre-activation of 0.007 has inputs up to 14), so ReLU cases take h = 1e-4 (round-off ~1e-11)
    h = 1e-4 if act == "relu" else 1e-3
    gradcheck(lambda: m.loss_and_grads(X, eps=eps), m.named_parameters(), order=4, eps=h, rtol=1e-7, rng=0)


def _torch_loss_and_grads(torch, m, X, eps1, eps2):
    """The same negative ELBO written with torch.distributions, differentiated by autograd (float64)."""
    td = torch.distributions
    P = {k: torch.tensor(v, requires_grad=True) for k, v in m.named_parameters().items()}
    act = torch.tanh if m.activation == "tanh" else torch.relu
    (n1, n2) = (len(h) for h in m.hidden)

    def mlp(net, h, n):
        for i in range(n):
            h = act(h @ P[f"{net}.{i}.W"] + P[f"{net}.{i}.b"])
        return h

    def gauss(net, h, n):
        h = mlp(net, h, n)
        mu, log_var = h @ P[f"{net}.mu.W"] + P[f"{net}.mu.b"], h @ P[f"{net}.log_var.W"] + P[f"{net}.log_var.b"]
        return td.Normal(mu, torch.exp(0.5 * log_var))

    if m.inference == "top_down":  # z2 ~ q(z2|x) first, then z1 ~ q(z1|z2, x) on [d, z2]
        d = mlp("q_d", torch.tensor(X), n1)
        q2 = gauss("q_z2", d, n2)
        z2 = q2.loc + q2.scale * torch.tensor(eps2)  # (L, N, Z2)
        q1 = gauss("q_z1", torch.cat([d.expand(z2.shape[0], *d.shape), z2], -1), n2)
        z1 = q1.loc + q1.scale * torch.tensor(eps1)
    else:
        q1 = gauss("q_z1", torch.tensor(X), n1)
        z1 = q1.loc + q1.scale * torch.tensor(eps1)  # (L, N, Z1)
        q2 = gauss("q_z2", z1, n2)
        z2 = q2.loc + q2.scale * torch.tensor(eps2)
    p1 = gauss("p_z1", z2, n2)
    logits = mlp("p_x", z1, n1) @ P["p_x.out.W"] + P["p_x.out.b"]
    log_px = td.Bernoulli(logits=logits).log_prob(torch.tensor(X).expand_as(logits)).sum(-1)
    est = log_px + p1.log_prob(z1).sum(-1) - q1.log_prob(z1).sum(-1)
    if m.inference == "top_down" and m.estimator == "analytic":  # both layer terms are KLs
        est = log_px - td.kl_divergence(q1, p1).sum(-1) - td.kl_divergence(q2, td.Normal(0.0, 1.0)).sum(-1)
    elif m.estimator == "analytic":
        est = est - td.kl_divergence(q2, td.Normal(0.0, 1.0)).sum(-1)
    else:
        est = est + td.Normal(0.0, 1.0).log_prob(z2).sum(-1) - q2.log_prob(z2).sum(-1)
    loss = -est.mean()
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy() for k, t in P.items()}


@pytest.mark.parametrize("inference", INFERENCES)
@pytest.mark.parametrize("z,hidden,est,L,act", CASES)
def test_gradients_match_torch_autograd(z, hidden, est, L, act, inference):
    from _require import require_torch

    torch = require_torch()
    rng = np.random.default_rng(2)
    m = _model(z, hidden, est, L, act, inference=inference)
    X = _binary(9, rng)
    eps = _eps(m, 9, rng)
    loss, grads = m.loss_and_grads(X, eps=eps if L > 1 else (eps[0][0], eps[1][0]))
    t_loss, t_grads = _torch_loss_and_grads(torch, m, X, *eps)
    assert abs(loss - t_loss) <= 1e-12 * abs(t_loss)
    assert grads.keys() == t_grads.keys()
    for k in grads:
        assert relative_error(grads[k], t_grads[k]) <= 1e-8, k


# ----------------------------------------------------------------------------- the estimator's value
def _np_net(P, net, h, n, act):
    """An independent plain-NumPy forward pass of one network."""
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    for i in range(n):
        h = f(h @ P[f"{net}.{i}.W"] + P[f"{net}.{i}.b"])
    if f"{net}.out.W" in P:
        return h @ P[f"{net}.out.W"] + P[f"{net}.out.b"]
    return h @ P[f"{net}.mu.W"] + P[f"{net}.mu.b"], np.exp(0.5 * (h @ P[f"{net}.log_var.W"] + P[f"{net}.log_var.b"]))


def _np_top_down_q(P, X, eps2, n1, n2, act):
    """Top-down q: d = q_d(x); (mu2, s2) of q(z2|x); z2; (mu1, s1) of q(z1|z2, x) on [d, z2]."""
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    d = X
    for i in range(n1):
        d = f(d @ P[f"q_d.{i}.W"] + P[f"q_d.{i}.b"])
    mu2, s2 = _np_net(P, "q_z2", d, n2, act)
    z2 = mu2 + s2 * eps2
    mu1, s1 = _np_net(P, "q_z1", np.concatenate([np.broadcast_to(d, z2.shape[:-1] + d.shape[-1:]), z2], -1), n2, act)
    return mu2, s2, z2, mu1, s1


def _normal_kl(m_q, s_q, m_p, s_p):
    """KL(N(m_q, s_q^2) || N(m_p, s_p^2)) per coordinate as -H(q) - E_q[log p], the entropy from scipy."""
    return -stats.norm.entropy(m_q, s_q) + 0.5 * np.log(2 * np.pi * s_p ** 2) + (s_q ** 2 + (m_q - m_p) ** 2) / (2 * s_p ** 2)


def _scipy_terms(m, X, eps1, eps2):
    """log p(x|z1), log p(z1|z2), log p(z2), log q(z1|.), log q(z2|.), KL(q(z2|.)||p(z2)) and (top-down)
    KL(q(z1|z2,x)||p(z1|z2)), each (L, N)."""
    P, act = m.named_parameters(), m.activation
    n1, n2 = (len(h) for h in m.hidden)
    if m.inference == "top_down":
        mu2, s2, z2, mu1, s1 = _np_top_down_q(P, X, eps2, n1, n2, act)
        z1 = mu1 + s1 * eps1
    else:
        mu1, s1 = _np_net(P, "q_z1", X, n1, act)
        z1 = mu1 + s1 * eps1
        mu2, s2 = _np_net(P, "q_z2", z1, n2, act)
        z2 = mu2 + s2 * eps2
    mup, sp = _np_net(P, "p_z1", z2, n2, act)
    probs = expit(_np_net(P, "p_x", z1, n1, act))
    norm = stats.norm
    return dict(log_px=stats.bernoulli.logpmf(X, probs).sum(-1), log_p1=norm.logpdf(z1, mup, sp).sum(-1),
                log_p2=norm.logpdf(z2).sum(-1), log_q1=norm.logpdf(z1, mu1, s1).sum(-1),
                log_q2=norm.logpdf(z2, mu2, s2).sum(-1), kl2=_normal_kl(mu2, s2, 0.0, 1.0).sum(-1),
                kl1=_normal_kl(mu1, s1, mup, sp).sum(-1))


@pytest.mark.parametrize("inference", INFERENCES)
@pytest.mark.parametrize("est,L", [("analytic", 1), ("mc", 1), ("analytic", 3), ("mc", 2)])
def test_estimator_equals_a_direct_scipy_computation(est, L, inference):
    rng = np.random.default_rng(3)
    m = _model(estimator=est, n_samples=L, inference=inference)
    X = _binary(7, rng)
    eps1, eps2 = _eps(m, 7, rng)
    t = _scipy_terms(m, X, eps1, eps2)
    log_w = t["log_px"] + t["log_p1"] + t["log_p2"] - t["log_q1"] - t["log_q2"]  # [eq:hvae-log-w] [eq:hvae-td-log-w]
    if est == "mc":
        est_ref = log_w
    elif inference == "top_down":
        est_ref = t["log_px"] - t["kl1"] - t["kl2"]  # [eq:hvae-td-estimator]
    else:
        est_ref = t["log_px"] + t["log_p1"] - t["log_q1"] - t["kl2"]  # [eq:hvae-estimator]
    loss, _ = m.loss_and_grads(X, eps=(eps1, eps2))
    np.testing.assert_allclose(loss, -est_ref.mean(), rtol=1e-12)
    lw, e = log_weights(m.named_parameters(), m.spec_, X, eps1, eps2, Workspace(np.float64))
    np.testing.assert_allclose(lw, log_w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e, est_ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- an exact oracle: 1-D latents
@functools.cache
def _tiny(inference="bottom_up"):
    """D = 4, z1 and z2 scalar: p(x) and the ELBO are 2-D integrals that a grid computes exactly enough.
    (Cached: the tests below only read the model.)"""
    m = _model(latent_dims=(1, 1), hidden=((3,), (3,)), d=4, rng=5, bias_scale=0.5, inference=inference)
    P = m.named_parameters()
    P["q_z1.log_var.b"][...] = np.log(0.6)  # posterior and prior scales well above the grid step
    P["q_z2.log_var.b"][...] = np.log(0.5)
    P["p_z1.log_var.b"][...] = np.log(0.4)
    for net in ("q_z1", "q_z2", "p_z1"):
        P[f"{net}.log_var.W"] *= 0.2
    # a few epochs on a small data set bring q near the posterior: light-tailed weights, so the
    # statistical checks below are sharp (any parameters would do for the exactness of the oracle)
    X = (np.random.default_rng(0).random((200, 4)) < [0.8, 0.2, 0.6, 0.7]).astype(np.float64)
    m.fit(X, epochs=60, batch_size=20, lr=1e-2, progress=False)
    x = np.array([[1.0, 0.0, 1.0, 1.0]])
    return m, x


def _quadrature(m, x):
    """log p(x) and the ELBO by the trapezoid rule on a 1201 x 1201 grid of (z1, z2) (a 2401 grid agrees to 1e-12)."""
    P, act = m.named_parameters(), m.activation
    g1, g2 = np.linspace(-10, 10, 1201), np.linspace(-10, 10, 1201)
    log_px = stats.bernoulli.logpmf(x, expit(_np_net(P, "p_x", g1[:, None], 1, act))).sum(-1)  # (G1,)
    mup, sp = _np_net(P, "p_z1", g2[:, None], 1, act)  # (G2, 1)
    log_joint = stats.norm.logpdf(g2)[:, None] + stats.norm.logpdf(g1[None, :], mup, sp) + log_px[None, :]  # (G2, G1)
    w = np.full(g1.size, g1[1] - g1[0])
    w[[0, -1]] /= 2  # trapezoid weights (the same for both axes)
    log_w2 = np.log(w)[:, None] + np.log(w)[None, :]
    log_p = logsumexp(log_joint + log_w2)
    if m.inference == "top_down":  # q(z2|x) q(z1|z2, x), z2 from the noise 0 for every z2 on the grid
        mu2, s2, _, _, _ = _np_top_down_q(P, x, np.zeros((1, 1)), 1, 1, act)
        _, _, _, mu1, s1 = _np_top_down_q(P, x, (g2[:, None] - mu2) / s2, 1, 1, act)  # at z2 = g2: (G2, 1)
        log_q = stats.norm.logpdf(g2, mu2[0], s2[0])[:, None] + stats.norm.logpdf(g1[None, :], mu1, s1)
    else:
        mu1, s1 = _np_net(P, "q_z1", x, 1, act)
        mu2, s2 = _np_net(P, "q_z2", g1[:, None], 1, act)  # q(z2|z1) for every z1 on the grid: (G1, 1)
        log_q = stats.norm.logpdf(g1, mu1[0], s1[0])[None, :] + stats.norm.logpdf(g2[:, None], mu2[:, 0], s2[:, 0])
    elbo = np.sum(np.exp(log_q + log_w2) * (log_joint - log_q))
    return log_p, elbo


@pytest.mark.parametrize("inference", INFERENCES)
def test_importance_weights_are_unbiased_for_the_exact_marginal(inference):
    m, x = _tiny(inference)
    log_p, elbo = _quadrature(m, x)
    assert elbo < log_p
    n = 100_000
    rng = np.random.default_rng(6)
    lw, _ = log_weights(m.named_parameters(), m.spec_, x, *_eps_n(m, n, rng), Workspace(np.float64))
    w = np.exp(lw[:, 0] - log_p)  # E[w / p(x)] = 1 exactly
    assert abs(w.mean() - 1.0) <= 5 * w.std() / np.sqrt(n)
    # the k-sample estimate: bias ~ -cv^2 / (2k) and spread ~ cv / sqrt(k) by the delta method
    k, cv = 20_000, w.std()
    est = m.log_likelihood(np.repeat(x, 10, axis=0), k=k, rng=7)
    assert abs(est.mean() - log_p) <= 5 * cv / np.sqrt(10 * k) + cv ** 2 / k


def _eps_n(m, n, rng):
    Z1, Z2 = m.latent_dims
    return rng.standard_normal((n, 1, Z1)), rng.standard_normal((n, 1, Z2))


@pytest.mark.parametrize("inference", INFERENCES)
@pytest.mark.parametrize("est", ["analytic", "mc"])
def test_both_estimators_are_unbiased_for_the_elbo(est, inference):
    """E[estimate] = the ELBO by quadrature, within 5 standard errors."""
    m, x = _tiny(inference)
    _, elbo = _quadrature(m, x)
    n = 40_000
    rng = np.random.default_rng(8)
    spec = dataclasses.replace(m.spec_, estimator=est)
    _, e = log_weights(m.named_parameters(), spec, x, *_eps_n(m, n, rng), Workspace(np.float64))
    assert abs(e.mean() - elbo) <= 5 * e.std() / np.sqrt(n)


@pytest.mark.parametrize("inference", INFERENCES)
def test_iwae_is_above_the_elbo_and_nondecreasing_in_k(inference):
    m = _model(inference=inference)
    rng = np.random.default_rng(9)
    x = _binary(1, rng)
    # deterministic, common random numbers: for the same k+1 draws, the (k+1)-sample estimate is at least the
    # mean of its k+1 leave-one-out k-sample estimates (concavity of log, Burda et al. Theorem 1)
    lw = log_weights(m.named_parameters(), m.spec_, x, *_eps_n(m, 51, rng), Workspace(np.float64))[0][:, 0]
    for k in (1, 5, 50):
        sub = lw[:k + 1]
        loo = [logsumexp(np.delete(sub, j)) - np.log(k) for j in range(k + 1)]
        assert logsumexp(sub) - np.log(k + 1) >= np.mean(loo) - 1e-12
    assert logsumexp(lw) - np.log(lw.size) >= lw.mean()  # Jensen for fixed draws
    # in expectation, with a margin of 5 standard errors
    R = 400
    Xrep = np.repeat(x, R, axis=0)
    means, ses = [], []
    for k in (1, 5, 50):
        e = m.log_likelihood(Xrep, k=k, rng=k)
        means.append(e.mean())
        ses.append(e.std() / np.sqrt(R))
    elbo = m.elbo(Xrep, rng=3)
    assert abs(means[0] - elbo.mean()) <= 5 * np.hypot(ses[0], elbo.std() / np.sqrt(R))  # k = 1: E = the ELBO
    for i in range(2):
        assert means[i + 1] - means[i] > 5 * np.hypot(ses[i], ses[i + 1])


def test_streamed_log_likelihood_equals_the_one_shot_logsumexp():
    m = _model()
    X = _binary(3, np.random.default_rng(10))
    streamed = m.log_likelihood(X, k=64, rng=0, batch_size=16)  # 4 chunks per row
    rng = np.random.default_rng(0)
    direct = []
    for i in range(3):  # the same stream of draws: per row, eps1 then eps2 per chunk
        lws = [log_weights(m.named_parameters(), m.spec_, X[i:i + 1], *_eps_n(m, 16, rng), Workspace(float))[0]
               for _ in range(4)]
        direct.append(logsumexp(np.concatenate(lws)) - np.log(64))
    np.testing.assert_allclose(streamed, direct, rtol=1e-13)


# ----------------------------------------------------------------------------- training and the rest of the API
@pytest.mark.parametrize("inference", INFERENCES)
def test_training_lowers_the_loss_and_seeds_reproduce(inference):
    rng = np.random.default_rng(11)
    X = _binary(200, rng)
    make = lambda seed: HierarchicalVAE(latent_dims=(4, 2), hidden=(12,), rng=seed, inference=inference)
    a = make(3).build(D)
    eps = _eps(a, 200, rng)
    before = a.loss_and_grads(X, eps=eps)[0]
    a.fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    assert a.loss_and_grads(X, eps=eps)[0] < before - 1.0
    assert a.history_["train_elbo"][-1] > a.history_["train_elbo"][0]
    b = make(3).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    c = make(4).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    for k, p in a.named_parameters().items():
        np.testing.assert_array_equal(p, b.named_parameters()[k])
    assert not np.array_equal(a.named_parameters()["p_x.out.W"], c.named_parameters()["p_x.out.W"])


@pytest.mark.parametrize("inference", INFERENCES)
def test_float32_training_keeps_the_dtype_and_the_api_shapes(inference):
    rng = np.random.default_rng(12)
    X = _binary(120, rng)
    m = HierarchicalVAE(latent_dims=(3, 2), hidden=((10,), (6,)), estimator="mc", n_samples=2, rng=0,
                        dtype=np.float32, inference=inference)
    m.fit(X, epochs=8, batch_size=20, lr=3e-3, validation=X[:40], kl_warmup=2, lr_decay=0.9, keep_best=True,
          progress=False)
    h = m.history_
    assert h["kl_weight"][0] < 1.0 and h["kl_weight"][-1] == 1.0 and "best_epoch" in h
    np.testing.assert_allclose(h["lr"], 3e-3 * 0.9 ** np.arange(8))
    assert all(p.dtype == np.float32 for p in m.named_parameters().values())
    assert all(g.dtype == np.float32 for g in m.loss_and_grads(X[:5])[1].values())
    (mu1, lv1), (mu2, lv2) = m.encode(X[:5])
    assert mu1.shape == lv1.shape == (5, 3) and mu2.shape == lv2.shape == (5, 2)
    outs = [mu1, lv1, mu2, lv2, m.decode(mu1), m.reconstruct(X[:5]), m.sample(4, rng=0),
            m.sample(4, rng=0, return_mean=True), m.elbo(X[:5], rng=0), m.log_likelihood(X[:5], k=10, rng=0),
            m.score_samples(X[:5], k=10, rng=0)]
    assert all(o.dtype == np.float32 for o in outs)
    assert m.sample(30, rng=1).shape == (30, D) and set(np.unique(m.sample(30, rng=1))) <= {0.0, 1.0}
    mean = m.sample(30, rng=2, return_mean=True)
    assert np.all((mean >= 0) & (mean <= 1))


def test_resumed_training_is_bit_identical(tmp_path):
    rng = np.random.default_rng(13)
    X, V = _binary(60, rng), _binary(20, rng)
    make = lambda: HierarchicalVAE(latent_dims=(3, 2), hidden=(6,), rng=5)
    fit = dict(batch_size=20, lr=3e-3, validation=V, kl_warmup=1, lr_decay=0.9, progress=False)
    ck = tmp_path / "ck.npz"
    make().fit(X, epochs=2, checkpoint=ck, **fit)
    resumed = make().fit(X, epochs=4, checkpoint=ck, resume=ck, **fit)
    straight = make().fit(X, epochs=4, **fit)
    for k, p in straight.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[k], p, err_msg=k)
    assert resumed.history_ == straight.history_
    with pytest.raises(ValueError, match="architecture"):
        HierarchicalVAE(latent_dims=(3, 3), hidden=(6,), rng=5).fit(X, epochs=4, resume=ck, **fit)
    # the inference model is part of the architecture: a bottom-up checkpoint does not resume a top-down model
    with pytest.raises(ValueError, match="architecture"):
        HierarchicalVAE(latent_dims=(3, 2), hidden=(6,), rng=5, inference="top_down").fit(X, epochs=4, resume=ck, **fit)


@pytest.mark.parametrize("inference", INFERENCES)
def test_save_load_round_trip(tmp_path, inference):
    rng = np.random.default_rng(14)
    X = _binary(40, rng)
    m = HierarchicalVAE(latent_dims=(3, 2), hidden=((6, 4), (5,)), estimator="mc", rng=0, dtype=np.float32,
                        inference=inference)
    m.fit(X, epochs=2, batch_size=10, progress=False)
    m.save(tmp_path / "h.npz")
    back = HierarchicalVAE.load(tmp_path / "h.npz")
    assert (back.latent_dims, back.hidden, back.estimator, back.dtype) == ((3, 2), ((6, 4), (5,)), "mc", np.float32)
    assert back.inference == inference and back._config() == m._config()
    assert back.history_ == m.history_
    for k, p in m.named_parameters().items():
        np.testing.assert_array_equal(back.named_parameters()[k], p)
    np.testing.assert_array_equal(back.log_likelihood(X, k=5, rng=0), m.log_likelihood(X, k=5, rng=0))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "h.npz").read_bytes()[:300])
    with pytest.raises(ValueError, match="bad.npz"):
        HierarchicalVAE.load(tmp_path / "bad.npz")
    from probgen.models.vae import VAE

    VAE(latent_dim=2, hidden=(4,), rng=0).build(D).save(tmp_path / "vae.npz")
    with pytest.raises(ValueError, match="HierarchicalVAE"):
        HierarchicalVAE.load(tmp_path / "vae.npz")


def test_configs_from_before_top_down_inference_still_load_and_resume(tmp_path):
    from probgen.io import load_npz_json, save_npz_json

    m = _model(latent_dims=(3, 2), hidden=((6,), (4,)))
    old = {"latent_dims": [3, 2], "hidden": [[6], [4]], "estimator": "analytic", "n_samples": 1, "activation": "tanh",
           "dtype": "float64", "n_features": D}  # the configuration as written before `inference` existed
    assert m._config() == old  # so bottom-up checkpoints and files written before still match exactly
    save_npz_json(tmp_path / "old.npz", m.named_parameters(),
                  {"format": "probgen.HierarchicalVAE", "config": old, "history": None})
    back = HierarchicalVAE.load(tmp_path / "old.npz")
    assert back.inference == "bottom_up" and back.spec_.inference == "bottom_up"
    X = _binary(3, np.random.default_rng(0))
    np.testing.assert_array_equal(back.elbo(X, rng=1), m.elbo(X, rng=1))
    t = _model(latent_dims=(3, 2), hidden=((6,), (4,)), inference="top_down")
    t.save(tmp_path / "td.npz")
    assert load_npz_json(tmp_path / "td.npz")[1]["config"] == {**old, "inference": "top_down"}
    bad = {**old, "inference": "sideways"}
    save_npz_json(tmp_path / "bad.npz", m.named_parameters(), {"format": "probgen.HierarchicalVAE", "config": bad})
    with pytest.raises(ValueError, match="bad.npz.*inference"):
        HierarchicalVAE.load(tmp_path / "bad.npz")


def test_unit_activity_detects_a_collapsed_unit():
    m = _model(latent_dims=(4, 3))
    P = m.named_parameters()
    P["q_z1.mu.W"][:, 1] = 0.0  # mu1_1 no longer depends on x: an inactive unit
    P["q_z2.mu.W"][:, 2] = 0.0  # nor mu2_2 on z1
    X = _binary(300, np.random.default_rng(15))
    a1, a2 = m.unit_activity(X, n_samples=5, rng=0)
    assert a1.shape == (4,) and a2.shape == (3,)
    assert a1[1] < 1e-20 and a2[2] < 1e-20  # a constant up to rounding
    assert np.all(np.delete(a1, 1) > 0) and np.all(np.delete(a2, 2) > 0)
    mu1 = m.encode(X)[0][0]
    np.testing.assert_allclose(a1, mu1.var(axis=0), rtol=1e-12)  # E_q[z1|x] = mu1(x) exactly


def test_top_down_encode_and_unit_activity():
    m = _model(latent_dims=(4, 3), inference="top_down")
    P = m.named_parameters()
    X = _binary(300, np.random.default_rng(15))
    (mu1, lv1), (mu2, lv2) = m.encode(X)
    # q(z2|x) exactly, and q(z1|z2, x) at z2 = mu2 (the mean path: noise 0)
    ref_mu2, ref_s2, _, ref_mu1, ref_s1 = _np_top_down_q(P, X, np.zeros((1, 300, 3)), 2, 1, "tanh")
    np.testing.assert_allclose(mu2, ref_mu2, rtol=1e-12)
    np.testing.assert_allclose(lv2, 2 * np.log(ref_s2), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mu1, ref_mu1[0], rtol=1e-12)
    np.testing.assert_allclose(lv1, 2 * np.log(ref_s1[0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.reconstruct(X[:4]), m.decode(mu1[:4]), rtol=1e-15)
    P["q_z2.mu.W"][:, 2] = 0.0  # mu2_2 no longer depends on x
    P["q_z1.mu.W"][:, 1] = 0.0  # nor mu1_1 on (d, z2)
    a1, a2 = m.unit_activity(X, n_samples=5, rng=0)
    assert a1.shape == (4,) and a2.shape == (3,)
    assert a1[1] < 1e-20 and a2[2] < 1e-20
    assert np.all(np.delete(a1, 1) > 0) and np.all(np.delete(a2, 2) > 0)
    np.testing.assert_allclose(a2, m.encode(X)[1][0].var(axis=0), rtol=1e-12)  # E_q[z2|x] = mu2(x) exactly


def test_hidden_forms():
    assert HierarchicalVAE(hidden=(8, 4)).hidden == ((8, 4), (8, 4))  # one tuple: the same for both layers
    assert HierarchicalVAE(hidden=7).hidden == ((7,), (7,))
    assert HierarchicalVAE(hidden=((8,), 3)).hidden == ((8,), (3,))
    assert HierarchicalVAE(hidden=[(), [5]]).hidden == ((), (5,))
    m = HierarchicalVAE(latent_dims=[5, 2], hidden=((8, 4), (3,))).build(D)
    shapes = {k: v.shape for k, v in m.named_parameters().items()}
    assert shapes["q_z1.0.W"] == (D, 8) and shapes["q_z1.mu.W"] == (4, 5) and shapes["q_z2.0.W"] == (5, 3)
    assert shapes["q_z2.log_var.W"] == (3, 2) and shapes["p_z1.0.W"] == (2, 3) and shapes["p_z1.mu.W"] == (3, 5)
    assert shapes["p_x.0.W"] == (5, 4) and shapes["p_x.1.W"] == (4, 8) and shapes["p_x.out.W"] == (8, D)
    t = HierarchicalVAE(latent_dims=[5, 2], hidden=((8, 4), (3,)), inference="top_down").build(D)
    shapes = {k: v.shape for k, v in t.named_parameters().items()}  # d = q_d(x) has width 4; q_z1 reads [d, z2]
    assert shapes["q_d.0.W"] == (D, 8) and shapes["q_d.1.W"] == (8, 4) and "q_d.mu.W" not in shapes
    assert shapes["q_z2.0.W"] == (4, 3) and shapes["q_z2.mu.W"] == (3, 2) and shapes["q_z1.0.W"] == (4 + 2, 3)
    assert shapes["q_z1.log_var.W"] == (3, 5) and shapes["p_z1.mu.W"] == (3, 5) and shapes["p_x.out.W"] == (8, D)
    assert list(t.named_parameters())[0] == "q_d.0.W"
    lin = HierarchicalVAE(latent_dims=[5, 2], hidden=((), ()), inference="top_down").build(D)
    assert lin.named_parameters()["q_z1.mu.W"].shape == (D + 2, 5)  # no feature layers: d = x


def test_bad_input_is_refused_clearly():
    rng = np.random.default_rng(16)
    with pytest.raises(NotFittedError, match="fit"):
        HierarchicalVAE().encode(np.zeros((2, D)))
    m = _model()
    with pytest.raises(ValueError, match="binarize"):
        m.fit(rng.random((10, D)), epochs=1, progress=False)
    X = _binary(4, rng)
    with pytest.raises(ValueError, match="binary"):
        m.elbo(X * 0.5)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.loss_and_grads(Xn)
    with pytest.raises(ValueError, match="features"):
        m.log_likelihood(np.zeros((3, D + 1)))
    e1, e2 = _eps(m, 4, rng, squeeze=True)
    for bad, msg in [((e1[:, :3], e2), r"eps\[0\].*\(4, 4\)"), ((e1, e2[:3]), r"eps\[1\].*\(4, 3\)"),
                     ((e1, e2, e2), "pair"), (e1, "pair"), ((e1[None, None], e2), "eps")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            m.loss_and_grads(X, eps=bad)
    with pytest.raises(ValueError, match="n_samples"):  # 2-D noise only when n_samples == 1
        _model(n_samples=2).loss_and_grads(X, eps=(e1, e2))
    for kwargs, exc, msg in [({"latent_dims": (0, 2)}, ValueError, "latent_dims"),
                             ({"latent_dims": 5}, ValueError, "latent_dims"),
                             ({"latent_dims": (3, 2, 1)}, ValueError, "latent_dims"),
                             ({"latent_dims": (3.5, 2)}, TypeError, "latent_dims"),
                             ({"hidden": ((4,), (3,), (2,))}, ValueError, "hidden"),
                             ({"hidden": ((4, 0), (3,))}, ValueError, "hidden"),
                             ({"hidden": "wide"}, TypeError, "hidden"),
                             ({"estimator": "iwae"}, ValueError, "estimator"),
                             ({"n_samples": 0}, ValueError, "n_samples"),
                             ({"activation": "gelu"}, ValueError, "activation"),
                             ({"dtype": np.int32}, TypeError, "dtype"),
                             ({"rng": "seed"}, TypeError, "rng"),
                             ({"inference": "ladder"}, ValueError, "inference.*bottom_up.*top_down.*ladder")]:
        with pytest.raises(exc, match=msg):
            HierarchicalVAE(**kwargs)
    with pytest.raises(ValueError, match="validation"):
        m.fit(_binary(10, rng), epochs=1, keep_best=True, progress=False)
    with pytest.raises(ValueError, match="k"):
        m.log_likelihood(X, k=0)
    with pytest.raises(ValueError, match="Z1"):
        m.decode(np.zeros((2, 5)))
