"""One GAN training iteration (a D step then a G step, Adam) against torch (``gan_step``).

MNIST-like data (784 binary pixels at density 0.13), batch 64, float32, relu MLPs as
``GAN`` builds them: G 100-256-256-784 with a linear output, D 784-256-256-1 ending in
one logit.  Both sides do the same work per call, exactly what ``GAN.fit`` runs per
minibatch with ``k = 1``:

1. draw z (64, 100); G(z) forward only; D forward on the one batch [X; G(z)] (128 rows);
   the loss ``[eq:gan-d-loss]`` from the logits (softplus forms), the mean D(x) and
   D(G(z)) statistics; D's backward (no input gradient) and one Adam step on D;
2. draw a fresh z; G(z) forward; D forward; the non-saturating loss ``[eq:gan-g-nonsat]``;
   backward through D into G(z) ``[eq:gan-backward]`` (D's parameter gradients of this
   pass are discarded) and through G; one Adam step on G.

Both optimisers are Adam(lr 2e-4, betas (0.5, 0.999)).  torch's step is the textbook
``nn.Sequential`` + ``torch.optim.Adam`` loop (default implementation choice) with the
same batches and the same initial weights; its losses are read back with ``.item()`` as
``fit`` reads its floats (the finiteness checks and the history need them).  The gather
of a minibatch from the data set is left out on both sides.
"""
from __future__ import annotations

import numpy as np

from ._harness import Case
from .case_vae import _data

D, L, H, B = 784, 100, 256, 64


def _gan():
    from probgen.models import GAN

    return GAN(latent_dim=L, generator_hidden=(H, H), discriminator_hidden=(H, H), rng=0,
               dtype=np.float32).build(D)


def _probgen_step(X):
    from probgen.nn.optim import Adam

    gan = _gan()
    opt_d = Adam(gan.discriminator.named_parameters("discriminator"), lr=2e-4, betas=(0.5, 0.999))
    opt_g = Adam(gan.generator.named_parameters("generator"), lr=2e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(1)

    def step():  # the body of GAN.fit's minibatch loop, k = 1
        z = rng.standard_normal((B, L), dtype=np.float32)
        d_loss, d_grads, _ = gan._discriminator_pass(X, z)
        if not np.isfinite(d_loss):
            raise FloatingPointError(d_loss)
        opt_d.step(d_grads)
        z = rng.standard_normal((B, L), dtype=np.float32)
        g_loss, g_grads = gan._generator_pass(z)
        if not np.isfinite(g_loss):
            raise FloatingPointError(g_loss)
        opt_g.step(g_grads)

    return step


def _torch_net(torch, seq):
    """torch twin of a probgen ``mlp`` (Linear/ReLU alternating) with the same weights."""
    layers = []
    for i, layer in enumerate(seq.layers.values()):
        if i % 2:
            layers.append(torch.nn.ReLU())
        else:
            lin = torch.nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(layer.params["W"].T.copy()))
                lin.bias.copy_(torch.from_numpy(layer.params["b"]))
            layers.append(lin)
    return torch.nn.Sequential(*layers)


def _torch_step(X):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    gan = _gan()
    G, Dnet = _torch_net(torch, gan.generator), _torch_net(torch, gan.discriminator)
    opt_d = torch.optim.Adam(Dnet.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.from_numpy(X)

    def step():
        # D step: G is not differentiated
        opt_d.zero_grad()
        with torch.no_grad():
            fake = G(torch.randn(B, L))
        logits = Dnet(torch.cat([x, fake]))[:, 0]
        d_loss = F.softplus(-logits[:B]).mean() + F.softplus(logits[B:]).mean()
        d_loss.backward()
        opt_d.step()
        with torch.no_grad():
            p = torch.sigmoid(logits)
            (p[:B].mean().item(), p[B:].mean().item())  # fit's D(x), D(G(z)) statistics
        if not np.isfinite(d_loss.item()):
            raise FloatingPointError
        # G step: non-saturating loss, back through D into G
        opt_g.zero_grad()
        g_loss = F.softplus(-Dnet(G(torch.randn(B, L)))).mean()
        g_loss.backward()
        opt_g.step()
        if not np.isfinite(g_loss.item()):
            raise FloatingPointError

    return step


def _setup(quick: bool):
    X = _data(B)  # MNIST-like: 784 binary pixels at density 0.13
    return _probgen_step(X), _torch_step(X)


CASES = [
    Case(name="gan_step", shape=f"G {L}-{H}-{H}-{D} D {D}-{H}-{H}-1 B={B}", dtype="float32",
         peer="torch Adam", setup=_setup, repeats=101, quick_repeats=21),
]
