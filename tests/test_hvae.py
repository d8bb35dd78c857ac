"""HierarchicalVAE, bottom-up and top-down inference: exact gradients (5-point differences, torch autograd), the
estimators against scipy and 2-D quadrature, the IWAE bound's ordering (the API: test_hvae_api.py)."""
import dataclasses
import functools

import numpy as np
import pytest
from _hvae_fixtures import INFERENCES, _binary, _eps, _model, _np_net, _np_top_down_q
from scipy import stats
from scipy.special import expit, logsumexp

from probgen.models._hvae_backward import Workspace, log_weights
from probgen.nn.gradcheck import gradcheck, relative_error

CASES = [  # (latent_dims, hidden, estimator, n_samples, activation)
    ((4, 3), ((6, 5), (5,)), "analytic", 1, "tanh"),
    ((4, 3), ((6, 5), (5,)), "mc", 1, "tanh"),
    ((3, 2), (5,), "analytic", 3, "relu"),
    ((3, 2), ((4,), (3, 4)), "mc", 2, "tanh"),
    ((2, 2), ((), ()), "analytic", 2, "tanh"),  # linear networks (top-down: d = x)
]


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
