"""VAE: gradients (finite differences, torch autograd), the estimators' expectations, the PPCA oracle."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probgen._validation import NotFittedError
from probgen.linear_latent.ppca import PPCA
from probgen.models._vae_kernels import (
    act_backward,
    act_backward_reference,
    bernoulli_nll_grad,
    bernoulli_nll_grad_reference,
)
from probgen.models.vae import VAE
from probgen.nn.gradcheck import gradcheck, relative_error

D, M = 12, 3


def _binary(N, rng, p=0.3):
    return (rng.random((N, D)) < p).astype(np.float64)


def _model(likelihood="bernoulli", estimator="analytic", n_samples=1, hidden=(7,), activation="tanh",
           rng=0, **kw):
    vae = VAE(latent_dim=M, hidden=hidden, likelihood=likelihood, estimator=estimator, n_samples=n_samples,
              activation=activation, rng=rng, **kw).build(D)
    # non-zero biases and a learned variance away from its start: generic parameters
    gen = np.random.default_rng(100)
    for name, p in vae.named_parameters().items():
        if not name.endswith(".W"):
            p[...] = 0.3 * gen.standard_normal(p.shape)
    return vae


def _data(likelihood, N, rng):
    return _binary(N, rng) if likelihood == "bernoulli" else rng.standard_normal((N, D))


CASES = [  # (likelihood, decoder_variance, estimator, n_samples, hidden, activation)
    ("bernoulli", "learned", "analytic", 1, (7,), "tanh"),
    ("bernoulli", "learned", "mc", 1, (7,), "tanh"),
    ("bernoulli", "learned", "analytic", 3, (7, 5), "relu"),
    ("bernoulli", "learned", "mc", 3, (7,), "relu"),
    ("gaussian", "learned", "analytic", 1, (7,), "tanh"),
    ("gaussian", "learned", "mc", 3, (7, 5), "tanh"),
    ("gaussian", 0.3, "analytic", 3, (7,), "relu"),
    ("gaussian", 0.3, "mc", 1, (), "tanh"),
]


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("lik,var,est,L,hidden,act", CASES)
def test_gradients_match_finite_differences(lik, var, est, L, hidden, act):
    rng = np.random.default_rng(1)
    vae = _model(lik, est, L, hidden, act, decoder_variance=var)
    X = _data(lik, 6, rng)
    eps = rng.standard_normal((L, 6, M))
    gradcheck(lambda: vae.loss_and_grads(X, eps=eps), vae.named_parameters(), rtol=1e-6, rng=0)


def _torch_loss_and_grads(torch, vae, X, eps):
    """The same negative ELBO written with torch.distributions, differentiated by autograd."""
    tdist = torch.distributions
    P = {k: torch.tensor(v, requires_grad=True) for k, v in vae.named_parameters().items()}
    act = torch.tanh if vae.activation == "tanh" else torch.relu
    K = len(vae.hidden)
    h = torch.tensor(X)
    for i in range(K):
        h = act(h @ P[f"encoder.{i}.W"] + P[f"encoder.{i}.b"])
    mu = h @ P["encoder.mu.W"] + P["encoder.mu.b"]
    log_var = h @ P["encoder.log_var.W"] + P["encoder.log_var.b"]
    q = tdist.Normal(mu, torch.exp(0.5 * log_var))
    z = q.loc + q.scale * torch.tensor(eps)  # (L, N, M)
    g = z
    for i in range(K):
        g = act(g @ P[f"decoder.{i}.W"] + P[f"decoder.{i}.b"])
    out = g @ P["decoder.out.W"] + P["decoder.out.b"]
    x = torch.tensor(X).expand_as(out)
    if vae.likelihood == "bernoulli":
        log_px = tdist.Bernoulli(logits=out).log_prob(x).sum(-1)
    else:
        if vae.decoder_variance == "learned":
            var = vae.min_variance + torch.exp(P["decoder.log_excess_var"])
        else:
            var = torch.tensor(vae.decoder_variance, dtype=torch.float64)
        log_px = tdist.Normal(out, var.sqrt()).log_prob(x).sum(-1)
    if vae.estimator == "analytic":
        kl = tdist.kl_divergence(q, tdist.Normal(0.0, 1.0)).sum(-1)
        elbo = log_px.mean(0) - kl
    else:
        prior = tdist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        elbo = (log_px + prior - q.log_prob(z).sum(-1)).mean(0)
    loss = -elbo.mean()
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy() for k, t in P.items()}


@pytest.mark.parametrize("lik,var,est,L,hidden,act", CASES)
def test_gradients_match_torch_autograd(lik, var, est, L, hidden, act):
    from _require import require_torch

    torch = require_torch()
    rng = np.random.default_rng(2)
    vae = _model(lik, est, L, hidden, act, decoder_variance=var)
    X = _data(lik, 9, rng)
    eps = rng.standard_normal((L, 9, M))
    loss, grads = vae.loss_and_grads(X, eps=eps if L > 1 else eps[0])
    t_loss, t_grads = _torch_loss_and_grads(torch, vae, X, eps)
    assert abs(loss - t_loss) <= 1e-8 * abs(t_loss)
    assert grads.keys() == t_grads.keys()
    for k in grads:
        assert relative_error(grads[k], t_grads[k]) <= 1e-8, k


def test_analytic_kl_equals_torch_kl_divergence():
    from _require import require_torch

    torch = require_torch()
    from probgen.models._vae_backward import Workspace
    from probgen.models._vae_eval import log_weights

    rng = np.random.default_rng(3)
    vae = _model()
    X = _binary(20, rng)
    _, kl, _ = log_weights(vae.named_parameters(), vae.spec_, X, rng.standard_normal((2, 20, M)),
                           Workspace(np.float64))
    mu, log_var = vae.encode(X)
    q = torch.distributions.Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * log_var)))
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).numpy()
    np.testing.assert_allclose(kl, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N,L", [(7, 3), (40, 5)])  # one block of rows, and several (BLOCK_ROWS = 64)
def test_fused_bernoulli_kernel_matches_reference(dtype, N, L):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((L * N, D)) * 5).astype(dtype)
    logits[0, :4] = [1e4, -1e4, 30.0, -30.0]
    X = _binary(N, rng).astype(dtype)
    grad, db = np.empty_like(logits), np.empty(D, dtype)
    nll = bernoulli_nll_grad(logits, X, 0.25, grad=grad, db=db)
    nll_ref, grad_ref, db_ref = bernoulli_nll_grad_reference(logits, X, 0.25)
    assert nll.dtype == grad.dtype == db.dtype == dtype
    assert np.all(np.isfinite(nll)) and np.all(np.isfinite(grad))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(nll, nll_ref, rtol=tol, atol=tol * D)
    np.testing.assert_allclose(grad, grad_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, db_ref, rtol=tol, atol=tol * L * N)
    np.testing.assert_allclose(bernoulli_nll_grad(logits, X, None), nll, rtol=tol)  # no-gradient path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["tanh", "relu"])
def test_fused_activation_backward_matches_reference(dtype, kind):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((33, 17)).astype(dtype)
    a[0, :3] = 0.0  # relu's kink: derivative 0 there, as torch
    d_h = rng.standard_normal((33, 17)).astype(dtype)
    h = np.tanh(a) if kind == "tanh" else np.maximum(a, 0)
    d_a_ref, db_ref = act_backward_reference(d_h, a, kind)
    db = np.empty(17, dtype)
    d_a = act_backward(d_h.copy(), h, kind, db)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert d_a.dtype == db.dtype == dtype
    np.testing.assert_allclose(d_a, d_a_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, db_ref, rtol=tol, atol=tol * 33)


# ----------------------------------------------------------------------------- the estimators
@settings(max_examples=8)
@given(seed=st.integers(0, 2**16), n_hidden=st.integers(2, 6))
def test_la_and_lb_agree_in_expectation(seed, n_hidden):
    """E[L^A] = E[L^B] = the ELBO: both estimators of one x, averaged over 4000 draws each."""
    rng = np.random.default_rng(seed)
    a = _model(estimator="mc", hidden=(n_hidden,), rng=seed)
    b = _model(estimator="analytic", hidden=(n_hidden,), rng=seed)
    for k, p in b.named_parameters().items():
        p[...] = a.named_parameters()[k]
    Xrep = np.repeat(_binary(1, rng), 4000, axis=0)  # one example, 4000 independent single-sample estimates
    ea, eb = a.elbo(Xrep, rng=seed), b.elbo(Xrep, rng=seed + 1)
    se = np.sqrt(ea.var() / ea.size + eb.var() / eb.size)
    assert abs(ea.mean() - eb.mean()) <= 5 * se


def test_iwae_is_above_elbo_and_increases_with_k():
    rng = np.random.default_rng(5)
    vae = _model(estimator="mc")
    x = _binary(1, rng)
    R = 400
    Xrep = np.repeat(x, R, axis=0)
    means, ses = [], []
    for k in (1, 5, 50):
        est = vae.log_likelihood(Xrep, k=k, rng=k)
        means.append(est.mean())
        ses.append(est.std() / np.sqrt(R))
    elbo = vae.elbo(Xrep, rng=7)
    assert abs(means[0] - elbo.mean()) <= 5 * np.hypot(ses[0], elbo.std() / np.sqrt(R))  # k = 1 is L^A
    for i in range(2):
        assert means[i + 1] - means[i] > 5 * np.hypot(ses[i], ses[i + 1])
    # with the same draws, log-mean-exp >= mean-log (Jensen), deterministically
    from probgen.models._vae_backward import Workspace
    from probgen.models._vae_eval import log_weights

    log_w = log_weights(vae.named_parameters(), vae.spec_, x, rng.standard_normal((50, 1, M)), Workspace(float))[0]
    assert np.logaddexp.reduce(log_w[:, 0]) - np.log(50) >= log_w[:, 0].mean()


def test_streaming_log_sum_exp_equals_the_one_shot_estimate():
    """Chunks of 16 samples (streamed log-sum-exp) = all 64 at once = a direct logsumexp of the same draws."""
    from probgen.models._vae_backward import Workspace
    from probgen.models._vae_eval import log_weights

    vae = _model()
    X = _binary(5, np.random.default_rng(6))
    streamed = vae.log_likelihood(X, k=64, rng=0, batch_size=16)  # one row at a time, 4 chunks each
    one_shot = vae.log_likelihood(X, k=64, rng=0, batch_size=64)  # one row at a time, 1 chunk each
    np.testing.assert_allclose(streamed, one_shot, rtol=1e-13)
    rng = np.random.default_rng(0)  # the same stream of draws, row by row
    direct = [np.logaddexp.reduce(log_weights(vae.named_parameters(), vae.spec_, X[i:i + 1],
                                              rng.standard_normal((64, 1, M)), Workspace(float))[0][:, 0])
              - np.log(64) for i in range(5)]
    np.testing.assert_allclose(streamed, direct, rtol=1e-13)


def test_linear_gaussian_vae_at_the_ppca_solution_is_exact():
    """Decoder = PPCA's ML solution, encoder = its exact posterior: ELBO = IWAE = log p(x) (closed form)."""
    rng = np.random.default_rng(7)
    Dp, Mp = 6, 2
    X = rng.standard_normal((300, Mp)) @ rng.standard_normal((Mp, Dp)) + 0.5 * rng.standard_normal((300, Dp)) + 1.0
    ppca = PPCA(Mp).fit(X)
    W, mean, s2 = ppca.W_, ppca.mean_, ppca.noise_variance_
    post_mean, post_cov = ppca.posterior(X)
    assert np.allclose(post_cov, np.diag(np.diag(post_cov)), atol=1e-12)  # R = I: diagonal posterior
    Mmat_inv = np.linalg.inv(W.T @ W + s2 * np.eye(Mp))
    vae = VAE(latent_dim=Mp, hidden=(), likelihood="gaussian", estimator="mc", decoder_variance=s2,
              rng=0).build(Dp)
    P = vae.named_parameters()
    P["decoder.out.W"][...] = W.T  # x = W z + mean
    P["decoder.out.b"][...] = mean
    P["encoder.mu.W"][...] = W @ Mmat_inv  # mu = Mmat^{-1} W^T (x - mean)
    P["encoder.mu.b"][...] = -mean @ W @ Mmat_inv
    P["encoder.log_var.W"][...] = 0.0
    P["encoder.log_var.b"][...] = np.log(np.diag(post_cov))
    np.testing.assert_allclose(vae.encode(X)[0], post_mean, atol=1e-10)
    exact = ppca.score_samples(X)
    np.testing.assert_allclose(vae.elbo(X, rng=0), exact, rtol=1e-11)  # log p(x,z) - log q(z|x) = log p(x)
    np.testing.assert_allclose(vae.log_likelihood(X[:20], k=100, rng=1), exact[:20], rtol=1e-11)
    # the analytic-KL estimator L^B is exact in expectation only
    lb = VAE(latent_dim=Mp, hidden=(), likelihood="gaussian", estimator="analytic", decoder_variance=s2).build(Dp)
    for k, p in lb.named_parameters().items():
        p[...] = P[k]
    rep = lb.elbo(np.repeat(X[:1], 4000, axis=0), rng=2)
    assert abs(rep.mean() - exact[0]) <= 5 * rep.std() / np.sqrt(rep.size)


# ----------------------------------------------------------------------------- training
def test_training_lowers_the_loss_and_seeds_reproduce():
    rng = np.random.default_rng(8)
    X = _binary(200, rng)
    eps = rng.standard_normal((200, M))
    a = VAE(latent_dim=M, hidden=(16,), rng=3).build(D)
    before = a.loss_and_grads(X, eps=eps)[0]
    a.fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    assert a.loss_and_grads(X, eps=eps)[0] < before - 1.0
    assert a.history_["train_elbo"][-1] > a.history_["train_elbo"][0]
    b = VAE(latent_dim=M, hidden=(16,), rng=3).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    c = VAE(latent_dim=M, hidden=(16,), rng=4).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    for k, p in a.named_parameters().items():
        np.testing.assert_array_equal(p, b.named_parameters()[k])
    assert a.history_ == b.history_
    assert not np.array_equal(a.named_parameters()["decoder.out.W"], c.named_parameters()["decoder.out.W"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lik", ["bernoulli", "gaussian"])
def test_both_precisions_train_and_keep_their_dtype(dtype, lik):
    rng = np.random.default_rng(9)
    X = _data(lik, 120, rng)
    vae = VAE(latent_dim=2, hidden=(10,), likelihood=lik, estimator="mc", n_samples=2, rng=0, dtype=dtype)
    vae.fit(X, epochs=12, batch_size=20, lr=3e-3, validation=X[:40], kl_warmup=2, lr_decay=0.95, progress=False)
    h = vae.history_
    assert h["train_elbo"][-1] > h["train_elbo"][0]
    assert h["kl_weight"][0] < 1.0 and h["kl_weight"][-1] == 1.0
    np.testing.assert_allclose(h["lr"], 1e-3 * 3 * 0.95 ** np.arange(12))
    assert all(p.dtype == dtype for p in vae.named_parameters().values())
    loss, grads = vae.loss_and_grads(X[:5])
    assert all(g.dtype == dtype for g in grads.values())
    mu, log_var = vae.encode(X[:5])
    outs = [mu, log_var, vae.decode(mu), vae.reconstruct(X[:5]), vae.sample(4, rng=0),
            vae.sample(4, rng=0, return_mean=True), vae.elbo(X[:5], rng=0), vae.log_likelihood(X[:5], k=10, rng=0)]
    assert all(o.dtype == dtype for o in outs)
    if lik == "bernoulli":
        assert set(np.unique(vae.sample(50, rng=1))) <= {0.0, 1.0}


def test_gaussian_variance_floor():
    vae = _model("gaussian", hidden=(5,))
    rho = vae.named_parameters()["decoder.log_excess_var"]
    rho[...] = -800.0  # exp underflows to 0: the variance sits exactly on the floor
    X = np.random.default_rng(10).standard_normal((4, D))
    loss, grads = vae.loss_and_grads(X, eps=np.zeros((4, M)))
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    from probgen.models._vae_backward import decoder_log_var

    np.testing.assert_allclose(decoder_log_var(vae.named_parameters(), vae.spec_, np.float64),
                               np.log(vae.min_variance))


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    X = _binary(40, rng)
    vae = VAE(latent_dim=2, hidden=(6,), rng=0, dtype=np.float32).fit(X, epochs=2, batch_size=10, progress=False)
    vae.save(tmp_path / "vae.npz")
    with np.load(tmp_path / "vae.npz", allow_pickle=False) as z:
        assert "decoder.out.W" in z.files
    back = VAE.load(tmp_path / "vae.npz")
    assert back.n_features_in_ == D and back.dtype == np.float32 and back.history_ == vae.history_
    np.testing.assert_array_equal(back.reconstruct(X), vae.reconstruct(X))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "vae.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match="bad.npz"):
        VAE.load(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_clearly():
    rng = np.random.default_rng(12)
    with pytest.raises(NotFittedError, match="fit"):
        VAE().encode(np.zeros((2, D)))
    with pytest.raises(NotFittedError):
        VAE().named_parameters()
    vae = _model()
    with pytest.raises(ValueError, match="binarize"):
        vae.fit(rng.random((10, D)), epochs=1, progress=False)
    X = _binary(4, rng)
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vae.loss_and_grads(X)
    with pytest.raises(ValueError, match="features"):
        vae.elbo(np.zeros((3, D + 1)))
    with pytest.raises(ValueError, match="eps"):
        vae.loss_and_grads(_binary(4, rng), eps=np.zeros((4, M + 1)))
    with pytest.raises(ValueError, match="eps"):
        _model(n_samples=2).loss_and_grads(_binary(4, rng), eps=np.zeros((4, M)))
    for kwargs, exc in [({"latent_dim": 0}, ValueError), ({"likelihood": "poisson"}, ValueError),
                        ({"estimator": "iwae"}, ValueError), ({"n_samples": 0}, ValueError),
                        ({"activation": "gelu"}, ValueError), ({"decoder_variance": -1.0}, ValueError),
                        ({"decoder_variance": "fixed"}, ValueError), ({"min_variance": 0.0}, ValueError),
                        ({"hidden": (4, 0)}, ValueError), ({"dtype": np.int32}, TypeError),
                        ({"rng": "seed"}, TypeError)]:
        with pytest.raises(exc):
            VAE(**kwargs)
    for kwargs in [{"epochs": -1}, {"batch_size": 0}, {"lr": 0.0}, {"lr_decay": 1.5}, {"kl_warmup": -1}]:
        with pytest.raises(ValueError):
            vae.fit(_binary(10, rng), progress=False, **kwargs)
    with pytest.raises(ValueError, match="validation"):
        vae.fit(_binary(10, rng), epochs=1, keep_best=True, progress=False)
    with pytest.raises(ValueError):
        vae.log_likelihood(_binary(3, rng), k=0)
