"""PPCA closed-form fit against scikit-learn's PCA on the same data (``ppca_fit``).

scikit-learn's ``PCA(n_components=M)`` (default solver: for N >= 10 D and D <= 1000 it picks
``covariance_eigh``, i.e. ``X^T X`` plus a full ``eigh``) computes the same principal subspace and
PPCA noise variance; probgen's fit is one ``syrk`` plus a top-M ``eigh``.  ``--quick`` uses N=5000, D=256.
"""
from __future__ import annotations

import numpy as np

from ._harness import Case


def _data(N, D, dtype, seed=0):
    rng = np.random.default_rng(seed)
    # a 50-dimensional signal plus isotropic noise and an offset, like pixel data
    X = rng.standard_normal((N, 50)) @ rng.standard_normal((50, D)) * 0.2
    X += rng.standard_normal((N, D))
    X += 0.5
    return X.astype(dtype)


def _setup(dtype):
    def setup(quick: bool):
        from sklearn.decomposition import PCA

        from probgen.linear_latent import PPCA

        N, D, M = (5000, 256, 20) if quick else (10000, 784, 20)  # --quick: still N >= 10 D
        X = _data(N, D, dtype)
        return (lambda: PPCA(M).fit(X)), (lambda: PCA(n_components=M).fit(X))

    return setup


CASES = [
    Case(name="ppca_fit", shape="N=10000 D=784 M=20", dtype="float64", peer="sklearn PCA", setup=_setup(np.float64)),
    Case(name="ppca_fit_f32", shape="N=10000 D=784 M=20", dtype="float32", peer="sklearn PCA", setup=_setup(np.float32)),
]
