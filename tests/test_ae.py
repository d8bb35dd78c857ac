"""Autoencoder: gradients (finite differences, torch autograd), the PCA stationary point, training, checks."""
import numpy as np
import pytest

from probgen._validation import NotFittedError
from probgen.models.ae import Autoencoder
from probgen.nn.gradcheck import gradcheck, relative_error

D = 9


def _model(hidden=(6,), activation="tanh", latent_dim=2, rng=0, dtype=np.float64):
    ae = Autoencoder(latent_dim, hidden, activation, rng=rng, dtype=dtype).build(D)
    gen = np.random.default_rng(50)
    for name, p in ae.named_parameters().items():
        if name.endswith(".b"):
            p[...] = 0.3 * gen.standard_normal(p.shape)  # generic point, away from relu kinks at 0
    return ae


@pytest.mark.parametrize("hidden,activation", [((6,), "tanh"), ((6, 5), "relu"), ((), "relu")])
def test_gradients_match_finite_differences(hidden, activation):
    ae = _model(hidden, activation)
    X = np.random.default_rng(1).standard_normal((7, D))
    gradcheck(lambda: ae.loss_and_grads(X), ae.named_parameters(), rtol=1e-6, rng=0)


@pytest.mark.parametrize("hidden,activation", [((6,), "tanh"), ((6, 5), "relu")])
def test_gradients_match_torch_autograd(hidden, activation):
    from _require import require_torch

    torch = require_torch()
    ae = _model(hidden, activation)
    X = np.random.default_rng(2).standard_normal((8, D))
    loss, grads = ae.loss_and_grads(X)
    P = {k: torch.tensor(v, requires_grad=True) for k, v in ae.named_parameters().items()}
    act = torch.tanh if activation == "tanh" else torch.relu
    n = len(hidden) + 1
    h = torch.tensor(X)
    for net in ("encoder", "decoder"):
        for i in range(n):
            h = h @ P[f"{net}.{2 * i}.W"] + P[f"{net}.{2 * i}.b"]
            if i < n - 1:
                h = act(h)
    t_loss = torch.nn.functional.mse_loss(h, torch.tensor(X))
    t_loss.backward()
    assert abs(loss - float(t_loss.detach())) <= 1e-12 * float(t_loss.detach())
    for k, g in grads.items():
        assert relative_error(g, P[k].grad.numpy()) <= 1e-8, k


def test_linear_autoencoder_at_the_pca_projection_is_stationary():
    """Encoder U^T (x - mean), decoder U z + mean: loss = discarded variance / D and the gradient vanishes."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, D)) @ rng.standard_normal((D, D))
    mean = X.mean(axis=0)
    lam, U = np.linalg.eigh(np.cov(X.T, bias=True))
    U2 = U[:, -2:]
    ae = Autoencoder(2, (), rng=0).build(D)
    P = ae.named_parameters()
    P["encoder.0.W"][...] = U2
    P["encoder.0.b"][...] = -mean @ U2
    P["decoder.0.W"][...] = U2.T
    P["decoder.0.b"][...] = mean
    loss, grads = ae.loss_and_grads(X)
    assert loss == pytest.approx(lam[:-2].sum() / D, rel=1e-10)
    scale = max(np.abs(g).max() for g in ae.loss_and_grads(X + 1.0)[1].values())
    assert max(np.abs(g).max() for g in grads.values()) <= 1e-10 * max(scale, 1.0)


def test_training_lowers_the_loss_seeds_reproduce_and_float32_is_kept(tmp_path):
    X = np.random.default_rng(4).random((150, D))
    a = Autoencoder(2, (12,), rng=1).fit(X, epochs=15, batch_size=25, lr=1e-2, validation=X[:30], progress=False)
    b = Autoencoder(2, (12,), rng=1).fit(X, epochs=15, batch_size=25, lr=1e-2, validation=X[:30], progress=False)
    h = a.history_
    assert h["train_loss"][-1] < h["train_loss"][0] and h["validation_loss"][-1] < h["validation_loss"][0]
    assert a.history_ == b.history_
    for k, p in a.named_parameters().items():
        np.testing.assert_array_equal(p, b.named_parameters()[k])
    f = Autoencoder(2, (12,), rng=1, dtype=np.float32).fit(X, epochs=5, batch_size=25, progress=False)
    assert f.history_["train_loss"][-1] < f.history_["train_loss"][0]
    outs = [f.encode(X[:3]), f.decode(np.zeros((3, 2))), f.reconstruct(X[:3]), f.reconstruction_error(X[:3])]
    outs += list(f.loss_and_grads(X[:3])[1].values())
    assert all(o.dtype == np.float32 for o in outs)
    f.save(tmp_path / "ae.npz")
    back = Autoencoder.load(tmp_path / "ae.npz")
    np.testing.assert_array_equal(back.reconstruct(X), f.reconstruct(X))
    assert back.dtype == np.float32


def test_bad_input_is_refused_clearly():
    with pytest.raises(NotFittedError, match="fit"):
        Autoencoder(2).encode(np.zeros((2, D)))
    ae = _model()
    X = np.zeros((3, D))
    X[1, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        ae.loss_and_grads(X)
    with pytest.raises(ValueError, match="features"):
        ae.reconstruct(np.zeros((3, D - 1)))
    with pytest.raises(ValueError, match="features"):
        ae.decode(np.zeros((3, 5)))
    for kwargs, exc in [({"latent_dim": 0}, ValueError), ({"activation": "gelu"}, ValueError),
                        ({"hidden": "big"}, TypeError), ({"dtype": np.float16}, TypeError)]:
        with pytest.raises(exc):
            Autoencoder(**{"latent_dim": 2, **kwargs})
