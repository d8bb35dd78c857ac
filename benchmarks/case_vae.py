"""One Adam training step of a 784-400-20-400-784 Bernoulli VAE against torch (``vae_step``).

Both sides do the same work per call: draw the reparameterisation noise, encode
(tanh hidden layer, mu and log_var heads), decode, the Bernoulli NLL on logits plus
the analytic KL (:math:`\\mathcal L^B`, L = 1), the full backward pass and one Adam
update with torch's defaults (lr 1e-3, betas (0.9, 0.999), eps 1e-8), in float32.
probgen's step is exactly what ``VAE.fit`` runs per minibatch; torch's is the
textbook ``nn.Module`` + ``torch.optim.Adam`` loop (default implementation choice).
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

D, H, M = 784, 400, 20


def _data(B, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((B, D)) < 0.13).astype(np.float32)  # MNIST-like pixel density


def _probgen_step(X):
    from probgen.models import VAE
    from probgen.nn.optim import Adam

    vae = VAE(latent_dim=M, hidden=(H,), likelihood="bernoulli", estimator="analytic", activation="tanh",
              rng=0, dtype=np.float32).build(D)
    opt = Adam(vae.named_parameters(), lr=1e-3)
    rng = np.random.default_rng(1)

    def step():
        _, grads = vae._batch_step(X, rng, 1.0)  # what fit() runs per minibatch
        opt.step(grads)

    return step


def _torch_step(X):
    import torch

    torch.manual_seed(0)
    enc = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh())
    mu_head, lv_head = torch.nn.Linear(H, M), torch.nn.Linear(H, M)
    dec = torch.nn.Sequential(torch.nn.Linear(M, H), torch.nn.Tanh(), torch.nn.Linear(H, D))
    params = [*enc.parameters(), *mu_head.parameters(), *lv_head.parameters(), *dec.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.from_numpy(X)
    B = X.shape[0]

    def step():
        opt.zero_grad()
        h = enc(x)
        mu, log_var = mu_head(h), lv_head(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + log_var.exp() - 1.0 - log_var)
        loss = (rec + kl) / B
        loss.backward()
        opt.step()

    return step


def _setup(B):
    def setup(quick: bool):
        X = _data(B)
        return _probgen_step(X), _torch_step(X)

    return setup


CASES = [
    Case(name="vae_step", shape=f"{D}-{H}-{M} B=100", dtype="float32", peer="torch Adam", setup=_setup(100),
         repeats=101, quick_repeats=21),
    Case(name="vae_step_b1000", shape=f"{D}-{H}-{M} B=1000", dtype="float32", peer="torch Adam",
         setup=_setup(1000), repeats=41, quick_repeats=11),
]
