"""The two-stochastic-layer VAE's forward and backward passes as module-level functions (no autograd).

Generative model ``p(z2) p(z1|z2) p(x|z1)``.  This module holds the bottom-up inference model
``q(z1|x) q(z2|z1)`` (the IWAE paper's two-layer model; ``HVAESpec.inference == "bottom_up"``), the
pieces both inference orders share, and the entry points :func:`parameter_shapes`,
:func:`loss_and_grads` and :func:`log_weights`, which hand a ``"top_down"`` spec to
:mod:`probgen.models._hvae_topdown` (``q(z2|x) q(z1|z2,x)``).  Derived in ``docs/hvae.md``.  The
bottom-up model has four networks, each an MLP (:func:`probgen.models._vae_backward._mlp`) with the
parameter prefix

* ``q_z1`` -- :math:`x \\to (\\mu_1, \\log\\sigma_1^2)` of :math:`q(z_1|x)`, widths ``hidden[0]``;
* ``q_z2`` -- :math:`z_1 \\to (\\mu_2, \\log\\sigma_2^2)` of :math:`q(z_2|z_1)`, widths ``hidden[1]``;
* ``p_z1`` -- :math:`z_2 \\to (\\mu_p, \\log\\sigma_p^2)` of :math:`p(z_1|z_2)`, widths ``hidden[1]`` reversed;
* ``p_x``  -- :math:`z_1 \\to` Bernoulli logits of :math:`p(x|z_1)`, widths ``hidden[0]`` reversed.

Inputs are assumed valid (:class:`probgen.models.HierarchicalVAE` checks them).  On the training
path every array lives in a :class:`~probgen.models._vae_backward.Workspace`, so a step allocates
(almost) nothing; the Bernoulli output and the activation derivatives use the VAE's fused kernels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._vae_backward import Workspace, _lin_backward, _mlp
from ._vae_eval import streamed_log_mean_exp
from ._vae_kernels import BLOCK_ROWS, act_backward, bernoulli_nll_grad

__all__ = ["HVAESpec", "NETWORKS", "parameter_shapes", "gaussian_net", "logits_net", "forward", "loss_and_grads",
           "log_weights", "draw_noise", "elbo_estimates", "importance_log_likelihood"]

NETWORKS = ("q_z1", "q_z2", "p_z1", "p_x")


@dataclass(frozen=True)
class HVAESpec:
    """Architecture and objective of a two-layer hierarchical VAE (validated by the caller)."""

    n_features: int
    latent_dims: tuple  # (Z1, Z2)
    hidden: tuple  # (widths of the x<->z1 networks, widths of the z1<->z2 networks)
    activation: str  # "tanh" or "relu"
    estimator: str  # "analytic" (KL of q(z2|z1) in closed form) or "mc"
    n_samples: int
    inference: str = "bottom_up"  # or "top_down" (probgen.models._hvae_topdown)

    def widths(self, net: str) -> tuple:
        """Hidden widths of one of :data:`NETWORKS` (or, top-down, ``TD_NETWORKS``); the generative nets
        mirror the inference nets."""
        h0, h1 = self.hidden
        if self.inference == "top_down":  # q_d: x -> d; q_z2: d -> z2; q_z1: [d, z2] -> z1  [eq:hvae-td-inference]
            return {"q_d": h0, "q_z2": h1, "q_z1": h1, "p_z1": tuple(reversed(h1)), "p_x": tuple(reversed(h0))}[net]
        return {"q_z1": h0, "q_z2": h1, "p_z1": tuple(reversed(h1)), "p_x": tuple(reversed(h0))}[net]

    def feature_width(self) -> int:
        """Top-down: the width of the deterministic features ``d = q_d(x)`` (``D`` when ``hidden[0]`` is empty)."""
        return self.hidden[0][-1] if self.hidden[0] else self.n_features


def parameter_shapes(spec: HVAESpec) -> dict[str, tuple]:
    """``{name: shape}`` in a fixed order: ``q_z1``, ``q_z2``, ``p_z1``, ``p_x`` (top-down: ``q_d``,
    ``q_z2``, ``q_z1``, ``p_z1``, ``p_x``).

    Each network has hidden layers ``{net}.{i}.W`` (in, out) and ``.b``, then two Gaussian heads
    ``{net}.mu`` and ``{net}.log_var`` (a log-variance), or for ``p_x`` the logits layer ``p_x.out``;
    the top-down feature network ``q_d`` has hidden layers only.
    """
    D, (Z1, Z2) = spec.n_features, spec.latent_dims
    if spec.inference == "top_down":
        Hd = spec.feature_width()
        nets, ins = ("q_d", "q_z2", "q_z1", "p_z1", "p_x"), {"q_d": D, "q_z2": Hd, "q_z1": Hd + Z2, "p_z1": Z2, "p_x": Z1}
    else:
        nets, ins = NETWORKS, {"q_z1": D, "q_z2": Z1, "p_z1": Z2, "p_x": Z1}
    outs = {"q_z1": Z1, "q_z2": Z2, "p_z1": Z1}
    shapes = {}
    for net in nets:
        sizes = (ins[net],) + spec.widths(net)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            shapes[f"{net}.{i}.W"], shapes[f"{net}.{i}.b"] = (a, b), (b,)
        if net == "q_d":
            continue
        heads = ("mu", "log_var") if net in outs else ("out",)
        for head in heads:
            n_out = outs.get(net, D)
            shapes[f"{net}.{head}.W"], shapes[f"{net}.{head}.b"] = (sizes[-1], n_out), (n_out,)
    return shapes


def gaussian_net(p, spec: HVAESpec, net: str, x, ws: Workspace):
    """A diagonal-Gaussian network: hidden layers, then both heads in one product.

    Returns
    -------
    mu, log_var : ndarray of shape (R, M)
        Column views of one (R, 2M) buffer ``{net}.heads``.
    hs : list of ndarray
        ``[x, h_1, ..., h_K]`` (for the backward pass).
    W : ndarray of shape (H_K, 2M)
        The fused head weights ``[W_mu | W_log_var]`` (for the backward pass).
    """
    hs = _mlp(p, net, len(spec.widths(net)), x, spec.activation, ws, f"{net}.h")
    H, M = hs[-1].shape[1], p[f"{net}.mu.W"].shape[1]
    # [mu | log_var] = h [W_mu | W_log_var] + [b_mu | b_log_var]
    W, b = ws.get(f"{net}.heads.W", (H, 2 * M)), ws.get(f"{net}.heads.b", (2 * M,))
    W[:, :M], W[:, M:] = p[f"{net}.mu.W"], p[f"{net}.log_var.W"]
    b[:M], b[M:] = p[f"{net}.mu.b"], p[f"{net}.log_var.b"]
    heads = ws.get(f"{net}.heads", (x.shape[0], 2 * M))
    np.matmul(hs[-1], W, out=heads)
    heads += b
    return heads[:, :M], heads[:, M:], hs, W


def logits_net(p, spec: HVAESpec, z1, ws: Workspace):
    """``p_x``: codes ``z1`` (R, Z1) to Bernoulli logits (R, D) ``[eq:hvae-model]``; returns ``(logits, hs)``."""
    hs = _mlp(p, "p_x", len(spec.widths("p_x")), z1, spec.activation, ws, "p_x.h")
    out = ws.get("p_x.out", (z1.shape[0], spec.n_features))
    np.matmul(hs[-1], p["p_x.out.W"], out=out)
    out += p["p_x.out.b"]
    return out, hs


def _net_backward(p, g, spec: HVAESpec, net: str, d_y, hs, ws: Workspace, head_W, need_dx: bool, db=None):
    """Back through the output layer (weights ``head_W``; ``db`` its bias gradient if already summed)
    and the hidden layers of ``net``; returns the gradient of the net's input, or None without
    ``need_dx`` ``[eq:linear-backward]`` ``[eq:vae-backward-act]``."""
    K = len(hs) - 1
    d_h = ws.get(f"{net}.dh{K}", hs[K].shape) if (K or need_dx) else None
    if net == "p_x":
        gW, gb = g["p_x.out.W"], g["p_x.out.b"]
    else:  # the fused Gaussian heads: one product, gradients split below
        gW, gb = ws.get(f"{net}.d_heads.W", head_W.shape), ws.get(f"{net}.d_heads.b", d_y.shape[1:])
    _lin_backward(d_y, hs[K], head_W, gW, gb, d_h, db)
    if net != "p_x":
        M = head_W.shape[1] // 2
        g[f"{net}.mu.W"][...], g[f"{net}.log_var.W"][...] = gW[:, :M], gW[:, M:]
        g[f"{net}.mu.b"][...], g[f"{net}.log_var.b"][...] = gb[:M], gb[M:]
    return _hidden_backward(p, g, spec, net, d_h, hs, ws, need_dx)


def _prior1_backward(r, u, bw, d_hp, d_z1):
    """The sampled :math:`-\\beta w \\log p(z_1|z_2)` into ``d_hp = [d_mu_p | d_log_var_p]`` (overwritten) and
    ``d_z1`` (added to), from ``r = z1 - mu_p`` and ``u = r e^{-log_var_p}`` ``[eq:hvae-backward-prior1]``."""
    Z1 = r.shape[1]
    d_mup, d_lvp = d_hp[:, :Z1], d_hp[:, Z1:]
    np.multiply(u, -bw, out=d_mup)  # d/dmu_p = -beta w u
    d_z1 -= d_mup  # d/dz1 += beta w u
    np.multiply(r, u, out=d_lvp)
    d_lvp -= 1
    d_lvp *= -bw.dtype.type(0.5) * bw  # d/dlog_var_p = beta w (1 - r u) / 2


def _hidden_backward(p, g, spec: HVAESpec, net: str, d_h, hs, ws: Workspace, need_dx: bool):
    """Back through the hidden layers of ``net`` from ``d_h``, the gradient of its last hidden output
    (a C-contiguous buffer, overwritten); returns the gradient of the input, or None without ``need_dx``."""
    for i in range(len(hs) - 2, -1, -1):
        gbi = g[f"{net}.{i}.b"]
        act_backward(d_h, hs[i + 1], spec.activation, gbi)  # d_a = d_h * act'(a)  [eq:vae-backward-act]
        d_prev = ws.get(f"{net}.dh{i}", hs[i].shape) if (i or need_dx) else None
        _lin_backward(d_h, hs[i], p[f"{net}.{i}.W"], g[f"{net}.{i}.W"], gbi, d_prev, gbi)
        d_h = d_prev
    return d_h


def forward(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace, w=None):
    """Everything the loss and the log-weights need, for R = L N rows (row ``l N + n`` is example n).

    Parameters
    ----------
    X : ndarray of shape (N, D)
    eps1 : ndarray of shape (L, N, Z1)
    eps2 : ndarray of shape (L, N, Z2)
    w : float or None
        Row weight of the reconstruction gradient (``1/R``); None skips it.

    Returns
    -------
    dict of arrays: ``mu1, lv1, s1, z1`` (z1 as (R, Z1)), ``mu2, lv2, s2, z2``, ``mup, lvp``,
    ``r = z1 - mup``, ``u = r e^{-lvp}``, ``nll`` (R,), ``d_out`` (or None), the activations
    ``hs_q1, hs_q2, hs_p1, hs_px`` and fused head weights ``W_q1, W_q2, W_p1``.
    """
    L, N, Z1 = eps1.shape
    R = L * N
    dt = X.dtype
    mu1, lv1, hs_q1, W_q1 = gaussian_net(p, spec, "q_z1", X, ws)  # q(z1|x)  [eq:hvae-inference]
    s1 = ws.get("s1", (N, Z1))
    np.multiply(lv1, dt.type(0.5), out=s1)
    np.exp(s1, out=s1)
    z1 = ws.get("z1", (L, N, Z1))
    np.multiply(eps1, s1, out=z1)
    z1 += mu1  # z1 = mu1 + sigma1 eps1  [eq:hvae-reparam]
    z1 = z1.reshape(R, Z1)
    mu2, lv2, hs_q2, W_q2 = gaussian_net(p, spec, "q_z2", z1, ws)  # q(z2|z1)
    Z2 = mu2.shape[1]
    s2 = ws.get("s2", (R, Z2))
    np.multiply(lv2, dt.type(0.5), out=s2)
    np.exp(s2, out=s2)
    z2 = ws.get("z2", (R, Z2))
    np.multiply(eps2.reshape(R, Z2), s2, out=z2)
    z2 += mu2  # z2 = mu2(z1) + sigma2(z1) eps2  [eq:hvae-reparam]
    mup, lvp, hs_p1, W_p1 = gaussian_net(p, spec, "p_z1", z2, ws)  # p(z1|z2)  [eq:hvae-model]
    r, u = ws.get("r", (R, Z1)), ws.get("u_p", (R, Z1))
    np.subtract(z1, mup, out=r)
    np.negative(lvp, out=u)
    np.exp(u, out=u)
    u *= r  # u = (z1 - mu_p) / sigma_p^2
    out, hs_px = logits_net(p, spec, z1, ws)
    d_out = None if w is None else ws.get("d_out", out.shape)
    B = min(R, BLOCK_ROWS)
    nll = bernoulli_nll_grad(out, X, w, grad=d_out, db=ws.get("d_out.sum", (spec.n_features,)),
                             t=ws.get("t", (B, spec.n_features)), u=ws.get("u", (B, spec.n_features)),
                             nll=ws.get("nll", (R,)))  # -log p(x|z1)  [eq:vae-bernoulli]
    return dict(mu1=mu1, lv1=lv1, s1=s1, z1=z1, mu2=mu2, lv2=lv2, s2=s2, z2=z2, mup=mup, lvp=lvp, r=r, u=u,
                nll=nll, d_out=d_out, hs_q1=hs_q1, hs_q2=hs_q2, hs_p1=hs_p1, hs_px=hs_px, W_q1=W_q1, W_q2=W_q2,
                W_p1=W_p1)


def log_weights(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace):
    """Per-sample log-weights and the spec's ELBO estimate, both (L, N) float64.

    ``log_w`` :math:`= \\log p(x,z_1,z_2) - \\log q(z_1,z_2|x)` ``[eq:hvae-log-w]``;
    ``est`` is the single-sample estimate the training loss uses ``[eq:hvae-estimator]``
    (``log_w`` itself for ``estimator="mc"``).  A top-down spec is handed to
    :func:`probgen.models._hvae_topdown.log_weights` ``[eq:hvae-td-log-w]``.
    """
    if spec.inference == "top_down":
        from ._hvae_topdown import log_weights as top_down

        return top_down(p, spec, X, eps1, eps2, ws)
    L, N, _ = eps1.shape
    f = forward(p, spec, X, eps1, eps2, ws)
    rows = lambda a: np.sum(a, axis=-1, dtype=np.float64).reshape(L, N)
    # each log density without its -dim/2 log(2 pi): those cancel between p(z1|z2) and q(z1|x), p(z2) and q(z2|z1)
    log_px = -f["nll"].astype(np.float64).reshape(L, N)
    log_p1 = -0.5 * rows(f["r"] * f["u"] + f["lvp"])  # log p(z1|z2)  [eq:hvae-model]
    log_q1 = -0.5 * (rows(eps1 * eps1) + np.sum(f["lv1"], axis=1, dtype=np.float64))  # log q(z1|x)  [eq:vae-log-q]
    log_q2 = -0.5 * (rows(eps2 * eps2) + rows(f["lv2"]))  # log q(z2|z1)  [eq:vae-log-q]
    log_p2 = -0.5 * rows(f["z2"] * f["z2"])  # log p(z2)
    log_w = log_px + log_p1 + log_p2 - log_q1 - log_q2  # [eq:hvae-log-w]
    if spec.estimator == "mc":
        return log_w, log_w
    mu2, lv2 = f["mu2"], f["lv2"]
    kl2 = 0.5 * rows(mu2 * mu2 + f["s2"] * f["s2"] - 1 - lv2)  # [eq:hvae-kl2]
    return log_w, log_px + log_p1 - log_q1 - kl2  # [eq:hvae-estimator]


def loss_and_grads(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace, grads=None, beta: float = 1.0):
    """Mean negative ELBO estimate of a batch and its exact gradients for the given noise.

    Parameters
    ----------
    p : dict {name: ndarray}
        Parameters (:func:`parameter_shapes`).
    X : ndarray of shape (N, D), binary
    eps1 : ndarray of shape (L, N, Z1)
    eps2 : ndarray of shape (L, N, Z2)
    ws : Workspace
    grads : dict {name: ndarray} or None
        Output buffers with ``p``'s keys and shapes (overwritten); None skips the backward pass.
    beta : float
        Weight of the two KL-like terms (1 for the ELBO; < 1 during KL warm-up) ``[eq:hvae-loss]``.

    Returns
    -------
    loss : float
        :math:`J_\\beta` ``[eq:hvae-loss]``.
    elbo : float
        The mean ELBO estimate (``-J_1``).

    A top-down spec is handed to :func:`probgen.models._hvae_topdown.loss_and_grads` ``[eq:hvae-td-loss]``.
    """
    if spec.inference == "top_down":
        from ._hvae_topdown import loss_and_grads as top_down

        return top_down(p, spec, X, eps1, eps2, ws, grads, beta)
    L, N, Z1 = eps1.shape
    R = L * N
    dt = X.dtype
    w = 1.0 / R
    f = forward(p, spec, X, eps1, eps2, ws, None if grads is None else w)
    mu2, lv2, s2, z2, lvp, r, u = (f[k] for k in ("mu2", "lv2", "s2", "z2", "lvp", "r", "u"))
    sum64 = lambda a: float(np.sum(a, dtype=np.float64))
    rec = sum64(f["nll"]) / R
    # [log q(z1|x) - log p(z1|z2)] per row, without the cancelling log(2 pi)  [eq:hvae-estimator]
    t1 = 0.5 * (float(np.vdot(r, u)) + sum64(lvp) - float(np.vdot(eps1, eps1)) - L * sum64(f["lv1"])) / R
    if spec.estimator == "analytic":
        t2 = 0.5 * (float(np.vdot(mu2, mu2)) + float(np.vdot(s2, s2)) - R * mu2.shape[1] - sum64(lv2)) / R  # [eq:hvae-kl2]
    else:  # log q(z2|z1) - log p(z2)  [eq:hvae-log-w]
        t2 = 0.5 * (float(np.vdot(z2, z2)) - float(np.vdot(eps2, eps2)) - sum64(lv2)) / R
    loss, elbo = rec + beta * (t1 + t2), -(rec + t1 + t2)
    if grads is None:
        return loss, elbo
    g = grads
    bw = dt.type(beta * w)
    half = dt.type(0.5)
    # ---------------------------------------------------------------- p(x|z1)  [eq:hvae-backward-logits]
    d_z1 = _net_backward(p, g, spec, "p_x", f["d_out"], f["hs_px"], ws, p["p_x.out.W"], True,
                         ws.get("d_out.sum", (spec.n_features,)))
    # ---------------------------------------------------------------- p(z1|z2)  [eq:hvae-backward-prior1]
    d_hp = ws.get("p_z1.d_y", (R, 2 * Z1))
    _prior1_backward(r, u, bw, d_hp, d_z1)
    d_z2 = _net_backward(p, g, spec, "p_z1", d_hp, f["hs_p1"], ws, f["W_p1"], True)
    # ---------------------------------------------------------------- q(z2|z1)  [eq:hvae-backward-z2]
    Z2 = z2.shape[1]
    d_hq2 = ws.get("q_z2.d_y", (R, 2 * Z2))
    d_mu2, d_lv2 = d_hq2[:, :Z2], d_hq2[:, Z2:]
    if spec.estimator == "mc":
        d_z2 += bw * z2  # the prior term -log p(z2) = 1/2 |z2|^2
    np.multiply(d_z2, eps2.reshape(R, Z2), out=d_lv2)
    d_lv2 *= s2
    d_lv2 *= half  # dz2/dlog_var2 = sigma2 eps2 / 2
    np.copyto(d_mu2, d_z2)  # dz2/dmu2 = 1
    if spec.estimator == "analytic":  # the KL of q(z2|z1) from N(0, I)  [eq:hvae-backward-kl2]
        d_mu2 += bw * mu2
        d_lv2 += (half * bw) * (s2 * s2 - 1)
    else:
        d_lv2 -= half * bw  # the entropy term -1/2 log_var2
    d_z1_q2 = _net_backward(p, g, spec, "q_z2", d_hq2, f["hs_q2"], ws, f["W_q2"], True)
    d_z1 += d_z1_q2  # z1 feeds q(z2|z1) as well as p(x|z1) and p(z1|z2)  [eq:hvae-backward-z1]
    # ---------------------------------------------------------------- q(z1|x)  [eq:hvae-backward-q1]
    d_hq1 = ws.get("q_z1.d_y", (N, 2 * Z1))
    d_mu1, d_lv1 = d_hq1[:, :Z1], d_hq1[:, Z1:]
    d_z1 = d_z1.reshape(L, N, Z1)
    np.sum(d_z1, axis=0, out=d_mu1)
    d_z1 *= eps1
    np.sum(d_z1, axis=0, out=d_lv1)
    d_lv1 *= f["s1"]
    d_lv1 *= half
    d_lv1 -= dt.type(0.5 * beta / N)  # d/dlog_var1 of beta/R sum_l (-1/2 log_var1)
    _net_backward(p, g, spec, "q_z1", d_hq1, f["hs_q1"], ws, f["W_q1"], False)
    return loss, elbo


# --------------------------------------------------------------------------- evaluation
def draw_noise(rng, spec: HVAESpec, L: int, N: int, dtype):
    """Standard normal ``(eps1 (L, N, Z1), eps2 (L, N, Z2))``, in that order, from ``rng``."""
    Z1, Z2 = spec.latent_dims
    return rng.standard_normal((L, N, Z1), dtype=dtype), rng.standard_normal((L, N, Z2), dtype=dtype)


def elbo_estimates(p, spec: HVAESpec, X, rng, batch_size: int = 4096):
    """Per-example ELBO estimate with the spec's estimator, averaged over ``n_samples`` draws
    (float64, shape (N,)) ``[eq:hvae-estimator]``; at most ``batch_size`` rows decoded at once."""
    L = spec.n_samples
    out = np.empty(X.shape[0], np.float64)
    ws = Workspace(X.dtype)
    step = max(1, batch_size // L)
    for s in range(0, X.shape[0], step):
        Xb = X[s:s + step]
        out[s:s + step] = log_weights(p, spec, Xb, *draw_noise(rng, spec, L, Xb.shape[0], X.dtype), ws)[1].mean(axis=0)
    return out


def importance_log_likelihood(p, spec: HVAESpec, X, k: int, rng, batch_size: int = 4096):
    """:math:`\\log \\frac1k \\sum_i w_i` per example (float64, shape (N,)) ``[eq:hvae-iwae]``, streamed
    by :func:`probgen.models._vae_eval.streamed_log_mean_exp`."""
    ws = Workspace(X.dtype)

    def chunk_log_weights(Xb, n):
        return log_weights(p, spec, Xb, *draw_noise(rng, spec, n, Xb.shape[0], X.dtype), ws)[0]

    return streamed_log_mean_exp(X, k, batch_size, chunk_log_weights)
