"""Nearest-codebook search (the VQ-VAE quantiser) against torch: ``codebook_search``.

N=65536 query vectors of D=64 against K=512 code vectors, float32, indices of the nearest code.
probgen runs :func:`probgen.kernels.codebook.nearest_codebook` (chunked BLAS GEMM of the scores
``|e_k|^2 / 2 - x.e_k`` into a ~8 MiB buffer, NumPy argmin, and a Numba pass that re-scores the
codes within a proven rounding bound exactly, so ties go to the lowest index); torch runs
``torch.cdist(x, e).argmin(dim=1)``, the textbook form (cdist uses its matrix-product path for
these sizes and holds the whole N x K matrix).

``--quick`` shrinks N by 8x.
"""
from __future__ import annotations

import numpy as np

from ._harness import Case

N, D, K = 65536, 64, 512


def _setup(quick):
    import torch

    from probgen.kernels.codebook import nearest_codebook

    rng = np.random.default_rng(0)
    n = N // 8 if quick else N
    x = rng.standard_normal((n, D)).astype(np.float32)
    codebook = rng.standard_normal((K, D)).astype(np.float32)
    xt, ct = torch.from_numpy(x), torch.from_numpy(codebook)

    def probgen_fn():
        return nearest_codebook(x, codebook)

    def peer_fn():
        return torch.cdist(xt, ct).argmin(dim=1)

    # the same answer on both sides (torch's float32 cdist may rank a rare near-tie differently)
    assert np.mean(probgen_fn() == peer_fn().numpy()) > 0.999
    return probgen_fn, peer_fn


CASES = [
    Case("codebook_search", f"N={N} D={D} K={K}", "float32", "torch", _setup),
]
