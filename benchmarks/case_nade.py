"""One Adam training step of NADE (D = 784, H = 500) on 32 binarised images against torch (``nade_step``).

Both sides do the same work per call, in float32: the conditional logits of all
784 pixels for the 32 images, the mean Bernoulli NLL, its gradients with respect
to ``W``, ``V``, ``b``, ``c`` and one Adam update with torch's defaults
(lr 1e-3, betas (0.9, 0.999), eps 1e-8).  probgen's step is exactly what
``NADE.fit`` runs per minibatch (the compiled running-sum forward and the
hand-written O(HD) backward).

torch's step is the vectorised form of the same O(HD) recursion, differentiated
by autograd: the pre-activations of all pixels at once as an exclusive
cumulative sum over d of x_d W_d, shape (N, D, H) ``[eq:nade-running]``, then
sigmoid, a batched dot with V and ``binary_cross_entropy_with_logits``.  (A
Python loop over the 784 pixels is about 20x slower in torch, and the
triangular-mask matmul, O(HD^2), is no faster than the cumsum.)
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

D, H, B = 784, 500, 32


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((B, D)) < 0.13).astype(np.float32)  # MNIST-like pixel density


def _probgen_step(X):
    from probgen.models.nade import NADE
    from probgen.nn.optim import Adam

    nade = NADE(n_hidden=H, rng=0, dtype=np.float32).build(D)
    opt = Adam(nade.named_parameters(), lr=1e-3)
    rng = np.random.default_rng(1)

    def step():
        _, grads = nade._batch_step(X, rng, 1.0)  # what fit() runs per minibatch
        opt.step(grads)

    return step


def _torch_step(X):
    import torch

    torch.manual_seed(0)
    bound = float(np.sqrt(6.0 / (D + H)))
    W = torch.nn.Parameter(torch.empty(D, H).uniform_(-bound, bound))
    V = torch.nn.Parameter(torch.empty(D, H).uniform_(-bound, bound))
    b = torch.nn.Parameter(torch.zeros(D))
    c = torch.nn.Parameter(torch.zeros(H))
    opt = torch.optim.Adam([W, V, b, c], lr=1e-3)
    x = torch.from_numpy(X)

    def step():
        opt.zero_grad()
        xw = x[:, :-1, None] * W[None, :-1]                      # x_d W_d, (N, D-1, H)
        a = torch.cumsum(torch.cat([c.expand(B, 1, H), xw], 1), 1)  # a_1 = c, a_{d+1} = a_d + x_d W_d
        logits = torch.einsum("ndh,dh->nd", torch.sigmoid(a), V) + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / B
        loss.backward()
        opt.step()

    return step


def _setup(quick: bool):
    X = _data()
    return _probgen_step(X), _torch_step(X)


CASES = [
    Case(name="nade_step", shape=f"D={D} H={H} B={B}", dtype="float32", peer="torch Adam", setup=_setup,
         repeats=15, quick_repeats=5),
]
