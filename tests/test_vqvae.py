"""VQ-VAE: straight-through gradient, torch autograd parity, the EMA formula, perplexity, training, checks."""
import numpy as np
import pytest

from probgen.kernels.codebook import nearest_codebook_reference
from probgen.models.vqvae import VQVAE, code_perplexity, ema_codebook_update


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
