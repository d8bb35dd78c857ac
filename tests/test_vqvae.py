"""VQ-VAE: straight-through gradient, torch parity, EMA, perplexity, dead-code restarts, the PixelCNN prior, the bound."""
import numpy as np
import pytest

from probgen.kernels.codebook import nearest_codebook_reference
from probgen.models.vq_codebook import code_perplexity, ema_codebook_update, restart_dead_codes
from probgen.models.vqvae import VQVAE


def _data(N=40, D=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((N, D)) < 0.4).astype(np.float64)


def _model(X, **kw):
    cfg = {"n_latents": 3, "code_dim": 4, "n_codes": 7, "hidden": (10,), "activation": "tanh", "rng": 0, **kw}
    vq = VQVAE(**cfg).build(X.shape[1])
    rng = np.random.default_rng(1)  # a codebook on the scale of the encoder outputs, so codes vary
    vq.codebook[...] = rng.standard_normal(vq.codebook.shape)
    vq._reset_ema()
    return vq


def _torch_loss(torch, vq, X, P):
    """The same model in torch, with z_q = z_e + (e - z_e).detach() ``[eq:vq-straight-through]``."""
    act = torch.tanh
    x = torch.tensor(X)
    h = act(x @ P["encoder.0.W"] + P["encoder.0.b"])
    z_e = (h @ P["encoder.2.W"] + P["encoder.2.b"]).reshape(len(X), vq.n_latents, vq.code_dim)
    idx = nearest_codebook_reference(z_e.detach().numpy().reshape(-1, vq.code_dim), vq.codebook)
    e = P["codebook"][torch.tensor(idx)].reshape(z_e.shape)
    z_q = z_e + (e - z_e).detach()
    h = act(z_q.reshape(len(X), -1) @ P["decoder.0.W"] + P["decoder.0.b"])
    out = h @ P["decoder.2.W"] + P["decoder.2.b"]
    if vq.likelihood == "bernoulli":
        rec = torch.nn.functional.binary_cross_entropy_with_logits(out, x, reduction="sum")
    else:
        rec = ((out - x) ** 2).sum()
    commit = ((z_e - e.detach()) ** 2).sum()
    codebook_term = ((z_e.detach() - e) ** 2).sum() if vq.codebook_update == "loss" else 0.0
    return (rec + codebook_term + vq.beta * commit) / len(X)  # [eq:vq-loss]


@pytest.mark.parametrize("likelihood", ["bernoulli", "squared_error"])
@pytest.mark.parametrize("codebook_update", ["loss", "ema"])
def test_gradients_match_torch_autograd(likelihood, codebook_update):
    from _require import require_torch

    torch = require_torch()
    X = _data()
    vq = _model(X, likelihood=likelihood, codebook_update=codebook_update, beta=0.3)
    loss, grads = vq.loss_and_grads(X)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in vq.named_parameters().items()}
    t_loss = _torch_loss(torch, vq, X, P)
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    assert len(np.unique(vq.encode(X))) > 2  # several codes in play, so the scatter is exercised
    for k, p in P.items():
        g = p.grad.numpy() if p.grad is not None else np.zeros_like(grads[k])
        err = np.linalg.norm(grads[k] - g) / max(np.linalg.norm(g), 1e-300)
        assert err <= 1e-8 or np.linalg.norm(g) == np.linalg.norm(grads[k]) == 0, (k, err)
    if codebook_update == "ema":
        assert not np.any(grads["codebook"])


def test_straight_through_gradient_is_the_decoders_input_gradient():
    X = _data(seed=2)
    vq = _model(X, beta=0.0)
    N = len(X)
    _, grads, z_e, idx, d_zq = vq._loss_and_grads(X, return_codes=True)
    enc_grads = {k: g.copy() for k, g in grads.items() if k.startswith("encoder")}
    # the decoder's input gradient, by central differences of the reconstruction term at z_q
    z_q = vq.codebook[idx].reshape(N, -1)
    rng = np.random.default_rng(3)
    v = rng.standard_normal(z_q.shape)
    h = 1e-6

    def rec(z):
        return np.mean(vq._recon(vq.decoder.forward(z), X)[0])

    fd = (rec(z_q + h * v) - rec(z_q - h * v)) / (2 * h)
    assert np.sum(d_zq.reshape(N, -1) * v) == pytest.approx(fd, rel=1e-7)
    # and the encoder receives exactly that gradient (beta = 0: nothing else reaches z_e)
    vq.encoder.zero_grad()
    vq.encoder.forward(X)
    vq.encoder.backward(d_zq.reshape(N, -1), need_dx=False)
    for k, g in vq.encoder.named_grads("encoder").items():
        np.testing.assert_array_equal(enc_grads[k], g)


def test_ema_update_equals_its_formula():
    rng = np.random.default_rng(4)
    K, C, B = 5, 3, 50
    N_k = rng.uniform(0, 4, K)
    m_k = rng.standard_normal((K, C))
    z = rng.standard_normal((B, C))
    idx = rng.integers(0, K - 1, B)  # the last code unused: its count only decays
    gamma, eps = 0.9, 1e-3
    new_N, new_m, e = ema_codebook_update(N_k, m_k, z, idx, decay=gamma, eps=eps)
    for k in range(K):
        n_k = np.sum(idx == k)
        s_k = z[idx == k].sum(axis=0)
        assert new_N[k] == pytest.approx(gamma * N_k[k] + (1 - gamma) * n_k, rel=1e-14)
        np.testing.assert_allclose(new_m[k], gamma * m_k[k] + (1 - gamma) * s_k, rtol=1e-13, atol=1e-15)
    n = new_N.sum()
    np.testing.assert_allclose(e, new_m / ((new_N + eps) / (n + K * eps) * n)[:, None], rtol=1e-14)


def test_fit_step_applies_the_ema_update():
    X = _data(seed=5)
    vq = _model(X, codebook_update="ema", decay=0.8, eps=1e-4)
    N0, m0 = vq.ema_cluster_size_.copy(), vq.ema_code_sum_.copy()
    z_e = vq.encoder.forward(X).reshape(-1, vq.code_dim)
    idx = nearest_codebook_reference(z_e, vq.codebook)
    _, _, e = ema_codebook_update(N0, m0, z_e, idx, decay=0.8, eps=1e-4)
    _, grads = vq._batch_step(X, None, 1.0)
    assert "codebook" not in grads
    np.testing.assert_allclose(vq.codebook, e, rtol=1e-13)


def test_ema_start_keeps_unused_codes_in_place():
    """N_k = 1, m_k = e_k at the start: a code no output chooses keeps (almost) its vector, not e_k / eps."""
    X = _data(seed=6)
    vq = _model(X, codebook_update="ema", decay=0.9, eps=1e-5)
    vq.codebook[-1] = 50.0  # far from every encoder output: never chosen
    vq._reset_ema()
    far = vq.codebook[-1].copy()
    for _ in range(5):
        vq._batch_step(X, None, 1.0)
    N = vq.ema_cluster_size_
    n = N.sum()
    assert N[-1] == pytest.approx(0.9 ** 5, rel=1e-12)  # only the pseudo-count, decayed
    # e_k = m_k / N~_k with m_k = 0.9^5 e_k(0): off from e_k(0) only by the smoothing factor
    expected = far * 0.9 ** 5 / ((0.9 ** 5 + 1e-5) / (n + vq.n_codes * 1e-5) * n)
    np.testing.assert_allclose(vq.codebook[-1], expected, rtol=1e-12)
    np.testing.assert_allclose(vq.codebook[-1], far, rtol=1e-3)


def test_perplexity():
    assert code_perplexity(np.arange(8).repeat(3), 8) == pytest.approx(8.0)
    assert code_perplexity(np.zeros(10, int), 8) == pytest.approx(1.0)
    p = np.array([0.5, 0.25, 0.25])
    assert code_perplexity(np.array([0, 0, 1, 2]), 5) == pytest.approx(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.parametrize("codebook_update", ["loss", "ema"])
def test_training_lowers_the_loss_and_uses_several_codes(codebook_update, tmp_path):
    rng = np.random.default_rng(6)
    protos = (rng.random((4, 16)) < 0.5).astype(float)  # a toy mixture of 4 binary prototypes
    X = np.abs(protos[rng.integers(0, 4, 400)] - (rng.random((400, 16)) < 0.05))
    vq = VQVAE(n_latents=2, code_dim=3, n_codes=8, hidden=(32,), codebook_update=codebook_update,
               rng=0, dtype=np.float32)
    # with "loss" the loss first rises while Adam's lr-sized steps carry the small initial codebook
    # out to the encoder outputs, so give it a few hundred steps
    vq.fit(X, epochs=40, batch_size=25, lr=1e-3, progress=False)
    losses = vq.history_["train_loss"]
    assert losses[-1] < 0.6 * losses[0]
    assert vq.perplexity(X) > 1.5  # code usage does not collapse to a single code
    assert vq.decode(vq.encode(X[:5])).dtype == np.float32
    vq.save(tmp_path / "vq.npz")
    back = VQVAE.load(tmp_path / "vq.npz")
    np.testing.assert_array_equal(back.encode(X), vq.encode(X))


def test_bad_input():
    with pytest.raises(ValueError, match="codebook_update"):
        VQVAE(codebook_update="kmeans")
    with pytest.raises(ValueError, match="decay must be < 1"):
        VQVAE(decay=1.0)
    with pytest.raises(ValueError, match="no parameters yet"):
        VQVAE().encode(np.zeros((2, 3)))
    vq = VQVAE(n_latents=2, n_codes=4, rng=0).build(5)
    with pytest.raises(ValueError, match="5 features"):
        vq.loss_and_grads(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        vq.decode(np.array([[0, 4]]))


# ----------------------------------------------------------------------------- dead-code restarts
def _mixture(N=400, D=16, seed=6):
    rng = np.random.default_rng(seed)
    protos = (rng.random((4, D)) < 0.5).astype(float)  # a toy mixture of 4 binary prototypes
    return np.abs(protos[rng.integers(0, 4, N)] - (rng.random((N, D)) < 0.05))


def _collapsed(X, **kw):
    """One code at the centre of the encoder outputs, the other seven far away (never chosen)."""
    vq = VQVAE(n_latents=1, code_dim=2, n_codes=8, hidden=(32,), rng=0, **kw).build(X.shape[1])
    vq.codebook[...] = 50.0 + np.arange(8.0)[:, None]
    vq.codebook[0] = vq.encoder.forward(X).mean(axis=0)
    vq._reset_ema()
    return vq


def test_restart_function_moves_dead_codes_onto_encoder_outputs():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((20, 3))
    E = rng.standard_normal((6, 3))
    usage = np.array([5.0, 0.0, 2.0, 0.0, 0.5, 9.0])
    dead, new, N, m = restart_dead_codes(E, usage, z, threshold=1.0, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(dead, [1, 3, 4])
    assert N is None and m is None
    np.testing.assert_array_equal(new[[0, 2, 5]], E[[0, 2, 5]])  # live codes untouched
    rows = [int(np.flatnonzero((z == new[k]).all(axis=1))[0]) for k in dead]  # each one an encoder output
    assert len(set(rows)) == 3  # drawn without replacement
    again = restart_dead_codes(E, usage, z, threshold=1.0, rng=np.random.default_rng(1))[1]
    np.testing.assert_array_equal(again, new)  # deterministic given the generator
    # more dead codes than encoder outputs: drawn with replacement, still encoder outputs
    dead, new, _, _ = restart_dead_codes(E, np.zeros(6), z[:2], threshold=1.0, rng=rng)
    assert dead.size == 6 and all(((z[:2] == row).all(axis=1)).any() for row in new)


def test_restart_resets_the_ema_statistics_consistently():
    rng = np.random.default_rng(2)
    K, C, eps = 5, 3, 1e-3
    N = np.array([4.0, 1e-6, 2.0, 0.0, 3.0])
    m = rng.standard_normal((K, C))
    z = rng.standard_normal((10, C))
    dead, E, N2, m2 = restart_dead_codes(m / N.sum(), np.array([3, 0, 1, 0, 2.0]), z, threshold=1.0, rng=rng,
                                         cluster_size=N, code_sum=m, eps=eps)
    np.testing.assert_array_equal(dead, [1, 3])
    np.testing.assert_allclose(N2[dead], N.sum() / K, rtol=1e-15)  # the average count
    np.testing.assert_array_equal(N2[[0, 2, 4]], N[[0, 2, 4]])
    np.testing.assert_array_equal(m2[[0, 2, 4]], m[[0, 2, 4]])
    n = N2.sum()
    smoothed = (N2 + eps) / (n + K * eps) * n
    np.testing.assert_allclose(E, m2 / smoothed[:, None], rtol=1e-14)  # codebook = m / N~ for every code
    for k in dead:  # a restarted code sits on an encoder output
        assert np.min(np.linalg.norm(z - E[k], axis=1)) < 1e-12


@pytest.mark.parametrize("codebook_update", ["loss", "ema"])
def test_batch_step_revives_far_away_codes(codebook_update):
    X = _mixture(N=60)
    vq = _collapsed(X, codebook_update=codebook_update, restart_dead=True, restart_every=1)
    far = vq.codebook[1:].copy()
    z_e = vq.encoder.forward(X)
    N0, m0 = vq.ema_cluster_size_.copy(), vq.ema_code_sum_.copy()
    _, grads = vq._batch_step(X, np.random.default_rng(3), 1.0)
    assert vq._epoch_restarts == 7
    assert np.all(np.linalg.norm(vq.codebook[1:] - far, axis=1) > 10)  # they moved ...
    for k in range(1, 8):  # ... onto this batch's encoder outputs
        assert np.min(np.linalg.norm(z_e - vq.codebook[k], axis=1)) < 1e-12
    if codebook_update == "loss":
        assert not np.any(grads["codebook"][1:])  # no stale gradient step for the new vectors
    else:
        idx = np.zeros(len(X), dtype=np.int64)  # everything chose code 0 before the restart
        N1, m1, _ = ema_codebook_update(N0, m0, z_e, idx, decay=vq.decay, eps=vq.eps)
        np.testing.assert_allclose(vq.ema_cluster_size_[1:], N1.sum() / 8, rtol=1e-14)
        n = vq.ema_cluster_size_.sum()
        smoothed = (vq.ema_cluster_size_ + vq.eps) / (n + 8 * vq.eps) * n
        np.testing.assert_allclose(vq.codebook, vq.ema_code_sum_ / smoothed[:, None], rtol=1e-14)
        np.testing.assert_array_equal(vq.ema_code_sum_[0], m1[0])


@pytest.mark.parametrize("codebook_update", ["loss", "ema"])
def test_restarts_raise_the_perplexity_of_a_collapsed_codebook(codebook_update):
    X = _mixture()
    runs = {}
    for restart in (False, True):
        vq = _collapsed(X, codebook_update=codebook_update, restart_dead=restart)
        vq.fit(X, epochs=6, batch_size=50, progress=False)
        runs[restart] = vq
        assert len(vq.history_["n_restarts"]) == len(vq.history_["train_perplexity"]) == 6
    assert runs[False].perplexity(X) == 1.0 and sum(runs[False].history_["n_restarts"]) == 0
    assert runs[True].perplexity(X) > 3.0  # the 4 prototypes now have codes of their own
    assert sum(runs[True].history_["n_restarts"]) >= 7
    assert runs[True].history_["train_perplexity"][-1] > 3.0
    again = _collapsed(X, codebook_update=codebook_update, restart_dead=True)
    again.fit(X, epochs=6, batch_size=50, progress=False)
    np.testing.assert_array_equal(again.codebook, runs[True].codebook)  # deterministic given rng
    assert again.history_["n_restarts"] == runs[True].history_["n_restarts"]


def test_train_perplexity_counts_the_epochs_codes():
    X = _mixture(N=100)
    vq = VQVAE(n_latents=2, code_dim=3, n_codes=6, hidden=(16,), rng=0)
    seen = []

    def callback(epoch, model):  # the caller's callback still runs, after the history is written
        seen.append(len(model.history_["train_perplexity"]))
        return epoch == 2

    vq.fit(X, epochs=5, batch_size=100, lr=1e-12, progress=False, callback=callback)
    assert seen == [1, 2]  # stopped after epoch 2
    # one full batch per epoch and lr ~ 0: the epoch's codes are those of X before the step
    assert vq.history_["train_perplexity"][-1] == pytest.approx(vq.perplexity(X), rel=1e-12)


# ----------------------------------------------------------------------------- the prior and the bound
def _tiny_with_prior(D=5, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.random((30, D)) < 0.4).astype(float)
    vq = VQVAE(n_latents=2, code_dim=2, n_codes=3, hidden=(6,), activation="tanh", rng=seed).build(D)
    vq.codebook[...] = rng.standard_normal(vq.codebook.shape)  # codes on the scale of the encoder outputs
    vq.fit_prior(X, channels=4, n_layers=1, epochs=2, batch_size=10, lr=1e-2, progress=False, rng=seed)
    return vq, X


def _all_grids(L, K):
    return np.stack(np.meshgrid(*[np.arange(K)] * L, indexing="ij"), axis=-1).reshape(-1, L)


def test_prior_is_a_pmf_over_all_code_grids():
    vq, _ = _tiny_with_prior()
    assert vq.prior_.image_shape == (1, 2) and vq.prior_.levels == 3
    logp = vq.code_log_prob(_all_grids(2, 3))
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-12)


def test_bound_equals_its_terms_and_lies_below_the_exact_likelihood():
    from scipy.special import expit, logsumexp
    from scipy.stats import bernoulli

    vq, X = _tiny_with_prior()
    bound = vq.log_likelihood_bound(X)
    # independent terms: codes by the reference search, the prior's own score, scipy's Bernoulli pmf
    z_star = nearest_codebook_reference(vq.encoder.forward(X).reshape(-1, 2), vq.codebook).reshape(-1, 2)
    assert len(np.unique(z_star[:, 0] * 3 + z_star[:, 1])) > 1
    log_prior = vq.prior_.score_samples(z_star.reshape(-1, 1, 2))
    log_dec = bernoulli.logpmf(X, expit(vq.decode(z_star))).sum(axis=1)
    np.testing.assert_allclose(bound, log_prior + log_dec, rtol=1e-12)  # [eq:vq-bound]
    # exact log p(x) = log sum over the 9 grids of p(z) p(x | z)
    grids = _all_grids(2, 3)
    log_joint = vq.code_log_prob(grids)[:, None] + np.stack(
        [bernoulli.logpmf(X, expit(vq.decode(np.repeat(z[None], len(X), 0)))).sum(axis=1) for z in grids])
    exact = logsumexp(log_joint, axis=0)
    assert np.all(bound <= exact + 1e-12)
    # the gap is -log p(z* | x) [eq:vq-bound-gap]
    row = z_star[:, 0] * 3 + z_star[:, 1]
    np.testing.assert_allclose(exact - bound, -(log_joint[row, np.arange(len(X))] - exact), atol=1e-12)


def test_prior_samples_decode_to_the_data_shape():
    vq, X = _tiny_with_prior()
    codes = vq.sample_codes(7, rng=0)
    assert codes.shape == (7, 2) and codes.dtype == np.int64 and codes.min() >= 0 and codes.max() < 3
    means = vq.sample(7, rng=0)
    assert means.shape == (7, 5) and means.dtype == np.float64 and np.all((means > 0) & (means < 1))
    from scipy.special import expit
    np.testing.assert_allclose(means, expit(vq.decode(codes)), rtol=1e-14)  # same rng, same codes
    draws = vq.sample(7, rng=0, kind="draw")
    assert draws.shape == (7, 5) and set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_array_equal(draws, vq.sample(7, rng=0, kind="draw"))


def test_default_grid_is_the_most_square_factorisation():
    from probgen.models.vq_prior import check_grid, default_grid
    assert [default_grid(n) for n in (1, 2, 4, 6, 7, 12, 16)] == [(1, 1), (1, 2), (2, 2), (2, 3), (1, 7), (3, 4),
                                                                     (4, 4)]
    assert check_grid([4, 3], 12) == (4, 3)


def test_save_and_load_carry_the_prior(tmp_path):
    vq, X = _tiny_with_prior()
    vq.save(tmp_path / "vq.npz")
    back = VQVAE.load(tmp_path / "vq.npz")
    assert back.prior_ is not None and back.prior_.image_shape == (1, 2)
    np.testing.assert_array_equal(back.log_likelihood_bound(X), vq.log_likelihood_bound(X))
    np.testing.assert_array_equal(back.sample(4, rng=1), vq.sample(4, rng=1))
    assert back.prior_.history_ == vq.prior_.history_
    with np.load(tmp_path / "vq.npz", allow_pickle=False) as f:  # plain arrays, no pickle
        assert any(k.startswith("prior.") for k in f.files)
    vq.prior_ = None  # without a prior: the plain format, loaded without one
    vq.save(tmp_path / "plain.npz")
    assert VQVAE.load(tmp_path / "plain.npz").prior_ is None


def test_prior_errors():
    from probgen._validation import NotFittedError

    X = _data(N=10, D=6)
    vq = VQVAE(n_latents=2, code_dim=2, n_codes=4, hidden=(4,), rng=0).build(6)
    with pytest.raises(NotFittedError, match="no prior yet"):
        vq.sample(3)
    with pytest.raises(NotFittedError, match="no prior yet"):
        vq.log_likelihood_bound(X)
    with pytest.raises(ValueError, match=r"grid \(3, 1\) has 3 cells.*n_latents=2"):
        vq.fit_prior(X, grid=(3, 1), progress=False)
    with pytest.raises(TypeError, match="grid must be a pair"):
        vq.fit_prior(X, grid=2, progress=False)
    with pytest.raises(ValueError, match="2 to 256 codes.*n_codes=300"):
        VQVAE(n_latents=2, n_codes=300, hidden=(4,), rng=0).build(6).fit_prior(X, progress=False)
    with pytest.raises(ValueError, match="validation must have 6 features"):
        vq.fit_prior(X, validation=np.zeros((2, 5)), progress=False)
    vq.fit_prior(X, channels=2, n_layers=0, epochs=1, progress=False, rng=0)
    with pytest.raises(ValueError, match="X must be binary"):
        vq.log_likelihood_bound(X * 0.5)
    with pytest.raises(ValueError, match="kind"):
        vq.sample(2, kind="mode")
    with pytest.raises(ValueError, match=r"codes must be an integer array of shape \(N, 2\)"):
        vq.code_log_prob(np.zeros((2, 3), int))
    vq.fit(X, epochs=1, progress=False)
    assert vq.prior_ is None  # new codes, so the old prior is gone
    sq = VQVAE(n_latents=2, n_codes=4, hidden=(4,), likelihood="squared_error", rng=0).build(6)
    sq.fit_prior(X, channels=2, n_layers=0, epochs=1, progress=False, rng=0)
    with pytest.raises(ValueError, match="needs likelihood='bernoulli'"):
        sq.log_likelihood_bound(X)
    with pytest.raises(ValueError, match="kind='draw' needs likelihood='bernoulli'"):
        sq.sample(2, kind="draw")
    assert sq.sample(2, rng=0).shape == (2, 6)
    with pytest.raises(TypeError, match="restart_dead"):
        VQVAE(restart_dead="yes")
    with pytest.raises(ValueError, match="dead_threshold"):
        VQVAE(dead_threshold=0)
    with pytest.raises(ValueError, match="restart_every"):
        VQVAE(restart_every=0)


def test_load_refuses_a_prior_that_does_not_fit(tmp_path):
    from probgen.io import load_npz_json, save_npz_json

    vq, _ = _tiny_with_prior()
    vq.save(tmp_path / "vq.npz")
    arrays, meta = load_npz_json(tmp_path / "vq.npz")
    bad = {**meta, "config": {**meta["config"], "prior": {**meta["config"]["prior"]}}}
    bad["config"]["prior"]["config"] = {**meta["config"]["prior"]["config"], "levels": 4}
    save_npz_json(tmp_path / "levels.npz", arrays, bad)
    with pytest.raises(ValueError, match="levels=4.*n_codes=3"):
        VQVAE.load(tmp_path / "levels.npz")
    no_prior = {**meta, "config": {k: v for k, v in meta["config"].items() if k != "prior"}}
    save_npz_json(tmp_path / "stray.npz", arrays, no_prior)
    with pytest.raises(ValueError, match="do not match the architecture"):
        VQVAE.load(tmp_path / "stray.npz")
