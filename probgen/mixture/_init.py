"""Initial responsibilities for EM: k-means++ seeding, random data points, random soft assignments.

These never call scikit-learn.  Each returns responsibilities (N, K); the first M-step turns them
into weights, means and covariances.
"""
from __future__ import annotations

import numpy as np

__all__ = ["kmeans_plusplus", "initial_responsibilities", "INIT_PARAMS"]

INIT_PARAMS = ("kmeans++", "random", "random_from_data")


def _sq_dist(X, c):
    """Squared Euclidean distance of every row of X (N, D) to one point c (D,), computed exactly."""
    d = X - c
    return np.einsum("ij,ij->i", d, d)


def kmeans_plusplus(X, n_clusters: int, rng: np.random.Generator):
    """k-means++ seeding (Arthur & Vassilvitskii, 2007).

    The first centre is a uniformly random row; every further centre is a row drawn with
    probability proportional to its squared distance to the nearest centre chosen so far.

    Parameters
    ----------
    X : ndarray of shape (N, D)
    n_clusters : int
        K, at most N.
    rng : numpy.random.Generator

    Returns
    -------
    centers : ndarray of shape (K, D)
    indices : ndarray of shape (K,)
        Distinct row indices of the centres.  When every remaining row coincides with a chosen
        centre (fewer than K distinct points) the next index is drawn uniformly among the rows not
        yet chosen, so the indices stay distinct even though some centres coincide.
    """
    N = X.shape[0]
    indices = np.empty(n_clusters, dtype=np.int64)
    indices[0] = rng.integers(N)
    closest = _sq_dist(X, X[indices[0]]).astype(np.float64)
    for c in range(1, n_clusters):
        total = closest.sum()
        if total > 0 and np.isfinite(total):
            idx = rng.choice(N, p=closest / total)
        else:
            free = np.setdiff1d(np.arange(N), indices[:c])
            idx = rng.choice(free)
        indices[c] = idx
        np.minimum(closest, _sq_dist(X, X[idx]), out=closest)
    return X[indices].copy(), indices


def _hard_assignment(X, indices, n_components: int, dtype):
    """One-hot responsibilities: every row to its nearest seed (ties to the first), each seed row to
    its own component, so no component starts empty."""
    N = X.shape[0]
    best = np.full(N, np.inf)
    labels = np.zeros(N, dtype=np.int64)
    for k, idx in enumerate(indices):
        d = _sq_dist(X, X[idx])
        closer = d < best
        best[closer] = d[closer]
        labels[closer] = k
    labels[indices] = np.arange(n_components)
    resp = np.zeros((N, n_components), dtype=dtype)
    resp[np.arange(N), labels] = 1
    return resp


def initial_responsibilities(X, n_components: int, init_params: str, rng: np.random.Generator):
    """Responsibilities (N, K) from which the first M-step builds the initial parameters.

    ``"kmeans++"``: k-means++ seeds, then every sample hard-assigned to its nearest seed.
    ``"random_from_data"``: K distinct random samples as seeds, then the same hard assignment.
    ``"random"``: uniform random numbers, each row normalised to sum to 1.
    """
    N = X.shape[0]
    if init_params == "random":
        resp = rng.uniform(size=(N, n_components)).astype(X.dtype)
        return resp / resp.sum(axis=1, keepdims=True)
    if init_params == "kmeans++":
        _, indices = kmeans_plusplus(X, n_components, rng)
    elif init_params == "random_from_data":
        indices = rng.choice(N, size=n_components, replace=False)
    else:
        raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {init_params!r}")
    return _hard_assignment(X, indices, n_components, X.dtype)
