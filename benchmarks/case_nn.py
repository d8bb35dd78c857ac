"""One Adam update over the parameters of a 784-400-20-400-784 MLP, float32 (``adam_update*``).

Both sides update the same eight arrays (W and b of four layers, 644,804 numbers) in place from
fixed gradients with torch's default hyper-parameters.  probgen's side is ``Adam.step`` (dict
checks plus the fused serial Numba loop per array); the peers are ``torch.optim.Adam.step()`` in
its default (single-tensor) implementation and with ``fused=True``.  ``adam_update_reference``
times probgen's NumPy twin (a ufunc chain) against the default torch step, to show what the fused
loop buys.
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

SIZES = (784, 400, 20, 400, 784)
SHAPE = "-".join(map(str, SIZES))


def _arrays(seed=0):
    from probgen.nn.layers import mlp

    params = mlp(SIZES, "relu", rng=seed, dtype=np.float32).named_parameters()
    rng = np.random.default_rng(seed + 1)
    grads = {k: (1e-2 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params.items()}
    return params, grads


def _probgen(reference: bool):
    from probgen.nn.optim import Adam, adam_update_reference

    params, grads = _arrays()
    opt = Adam(params)
    if not reference:
        return lambda: opt.step(grads)

    def step():  # the same update through the NumPy twin
        opt.n_steps += 1
        for k, p in params.items():
            adam_update_reference(p, grads[k], opt.state["m"][k], opt.state["v"][k], lr=opt.lr,
                                  beta1=opt.beta1, beta2=opt.beta2, eps=opt.eps, step=opt.n_steps)

    return step


def _torch(fused: bool):
    import torch

    params, grads = _arrays()
    tensors = []
    for k, v in params.items():
        t = torch.from_numpy(v.copy()).requires_grad_()
        t.grad = torch.from_numpy(grads[k].copy())
        tensors.append(t)
    opt = torch.optim.Adam(tensors, fused=True) if fused else torch.optim.Adam(tensors)

    def step():
        with torch.no_grad():
            opt.step()

    return step


def _setup(reference: bool, fused: bool):
    def setup(quick: bool):
        return _probgen(reference), _torch(fused)

    return setup


CASES = [
    Case(name="adam_update", shape=SHAPE, dtype="float32", peer="torch Adam",
         setup=_setup(False, False), repeats=101, quick_repeats=21),
    Case(name="adam_update_vs_fused", shape=SHAPE, dtype="float32", peer="torch Adam fused",
         setup=_setup(False, True), repeats=101, quick_repeats=21),
    Case(name="adam_update_reference", shape=SHAPE, dtype="float32", peer="torch Adam",
         setup=_setup(True, False), repeats=101, quick_repeats=21),
]
