"""One Adam training step of an MLP VQ-VAE against torch (``vqvae_step``).

MNIST-like data (784 binary pixels at density 0.13), batch 128, float32; encoder
784-512-(16 x 32), relu; a codebook of 256 codes of width 32; decoder 512-512-784
giving Bernoulli logits; ``beta = 0.25``, ``codebook_update="loss"``.  Both sides do
the same work per call, exactly what ``VQVAE.fit`` runs per minibatch
(``_batch_step`` + one Adam step over encoder, decoder and codebook, torch's
defaults lr 1e-3, betas (0.9, 0.999)):

1. encode, nearest code of each of the 128 x 16 latent vectors ``[eq:vq-nearest]``,
   gather the codes, decode;
2. the loss ``[eq:vq-loss]``: Bernoulli NLL on logits (summed over pixels) plus
   ``(1 + beta) |z_e - e|^2``, averaged over the batch;
3. the straight-through backward ``[eq:vq-straight-through]``: the decoder's input
   gradient copied to the encoder's output plus the commitment term, the codebook
   gradient of ``|sg[z_e] - e|^2`` scattered to the chosen codes; one Adam step.

torch's step is the textbook construction: the nearest code by ``torch.cdist`` + ``argmin``
under ``no_grad``, ``z_q = e[idx]``, the codebook and commitment losses with ``.detach()``,
``z_e + (z_q - z_e).detach()`` into the decoder, ``binary_cross_entropy_with_logits``,
autograd, ``torch.optim.Adam``; same initial weights, same batch.  (For the 2048 x 32 by
256 x 32 search alone, ``cdist`` + ``argmin`` took 1.63 ms and the expanded square
``|z|^2 - 2 z e^T + |e|^2`` + ``argmin`` 1.76 ms at one thread: a tie; the faster one is used.)
"""
from __future__ import annotations

import numpy as np

from ._harness import Case
from .case_gan import _torch_net
from .case_vae import _data

D, H, NL, C, K, B, BETA = 784, 512, 16, 32, 256, 128, 0.25


def _vqvae():
    from probgen.models import VQVAE

    return VQVAE(n_latents=NL, code_dim=C, n_codes=K, hidden=(H,), activation="relu", likelihood="bernoulli",
                 beta=BETA, codebook_update="loss", rng=0, dtype=np.float32).build(D)


def _probgen_step(X):
    from probgen.nn.optim import Adam

    vq = _vqvae()
    opt = Adam(vq._params, lr=1e-3)
    rng = np.random.default_rng(1)

    def step():
        _, grads = vq._batch_step(X, rng, 1.0)  # what fit() runs per minibatch
        opt.step(grads)

    return step


def _torch_step(X):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    vq = _vqvae()
    enc, dec = _torch_net(torch, vq.encoder), _torch_net(torch, vq.decoder)
    codebook = torch.nn.Parameter(torch.from_numpy(vq.codebook.copy()))
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), codebook], lr=1e-3)
    x = torch.from_numpy(X)

    def step():
        opt.zero_grad()
        z_e = enc(x).view(B * NL, C)
        with torch.no_grad():
            idx = torch.cdist(z_e, codebook).argmin(1)
        z_q = codebook[idx]
        codebook_loss = (z_e.detach() - z_q).pow(2).sum() / B
        commitment = BETA * (z_e - z_q.detach()).pow(2).sum() / B
        z_st = z_e + (z_q - z_e).detach()  # straight-through
        rec = F.binary_cross_entropy_with_logits(dec(z_st.view(B, NL * C)), x, reduction="sum") / B
        loss = rec + codebook_loss + commitment
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _setup(quick: bool):
    X = _data(B)  # MNIST-like: 784 binary pixels at density 0.13
    return _probgen_step(X), _torch_step(X)


CASES = [
    Case(name="vqvae_step", shape=f"{D}-{H}-{NL}x{C} K={K} B={B}", dtype="float32", peer="torch Adam",
         setup=_setup, repeats=101, quick_repeats=21),
]
