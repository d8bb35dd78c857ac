"""Shared fixtures of the HierarchicalVAE tests: a generic small model, binary data, noise."""
import numpy as np

from probgen.models.hvae import HierarchicalVAE

D = 10


def _binary(N, rng, p=0.3, d=D):
    return (rng.random((N, d)) < p).astype(np.float64)


def _model(latent_dims=(4, 3), hidden=((6, 5), (5,)), estimator="analytic", n_samples=1, activation="tanh", d=D,
           rng=0, bias_scale=0.3, inference="bottom_up"):
    m = HierarchicalVAE(latent_dims=latent_dims, hidden=hidden, estimator=estimator, n_samples=n_samples,
                        activation=activation, rng=rng, inference=inference).build(d)
    gen = np.random.default_rng(100)  # generic (non-zero) biases
    for name, p in m.named_parameters().items():
        if not name.endswith(".W"):
            p[...] = bias_scale * gen.standard_normal(p.shape)
    return m


def _eps(m, N, rng, squeeze=False):
    L, (Z1, Z2) = m.n_samples, m.latent_dims
    e1, e2 = rng.standard_normal((L, N, Z1)), rng.standard_normal((L, N, Z2))
    return (e1[0], e2[0]) if squeeze else (e1, e2)


INFERENCES = ["bottom_up", "top_down"]


def _np_net(P, net, h, n, act):
    """An independent plain-NumPy forward pass of one network."""
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    for i in range(n):
        h = f(h @ P[f"{net}.{i}.W"] + P[f"{net}.{i}.b"])
    if f"{net}.out.W" in P:
        return h @ P[f"{net}.out.W"] + P[f"{net}.out.b"]
    return h @ P[f"{net}.mu.W"] + P[f"{net}.mu.b"], np.exp(0.5 * (h @ P[f"{net}.log_var.W"] + P[f"{net}.log_var.b"]))


def _np_top_down_q(P, X, eps2, n1, n2, act):
    """Top-down q: d = q_d(x); (mu2, s2) of q(z2|x); z2; (mu1, s1) of q(z1|z2, x) on [d, z2]."""
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    d = X
    for i in range(n1):
        d = f(d @ P[f"q_d.{i}.W"] + P[f"q_d.{i}.b"])
    mu2, s2 = _np_net(P, "q_z2", d, n2, act)
    z2 = mu2 + s2 * eps2
    mu1, s1 = _np_net(P, "q_z1", np.concatenate([np.broadcast_to(d, z2.shape[:-1] + d.shape[-1:]), z2], -1), n2, act)
    return mu2, s2, z2, mu1, s1
