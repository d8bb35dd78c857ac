"""Top-down inference for the two-stochastic-layer VAE: forward and backward passes (no autograd).

Generative model ``p(z2) p(z1|z2) p(x|z1)`` as in :mod:`probgen.models._hvae_backward`; inference
model ``q(z2|x) q(z1|z2, x)``, sampled in the generative order (the ladder VAE / NVAE / VDVAE order),
derived in ``docs/hvae.md`` (*Top-down inference*).  Five networks, each an MLP with the parameter prefix

* ``q_d``  -- the deterministic bottom-up features :math:`d = f(x)`, hidden layers ``hidden[0]`` only
  (no heads; :math:`d = x` when ``hidden[0]`` is empty);
* ``q_z2`` -- :math:`d \\to (\\mu_2, \\log\\sigma_2^2)` of :math:`q(z_2|x)`, widths ``hidden[1]``;
* ``q_z1`` -- :math:`[d, z_2] \\to (\\mu_1, \\log\\sigma_1^2)` of :math:`q(z_1|z_2, x)`, widths ``hidden[1]``;
* ``p_z1``, ``p_x`` -- the generative networks, exactly as bottom-up.

Both layer terms of the ELBO are KL divergences between diagonal Gaussians with the same conditioning,
so ``estimator="analytic"`` takes both in closed form.  Reached through the dispatching entry points of
:mod:`probgen.models._hvae_backward` (``spec.inference == "top_down"``); inputs are assumed valid.
"""
from __future__ import annotations

import numpy as np

from ._hvae_backward import HVAESpec, _hidden_backward, _net_backward, _prior1_backward, gaussian_net, logits_net
from ._vae_backward import Workspace, _mlp
from ._vae_kernels import BLOCK_ROWS, bernoulli_nll_grad

__all__ = ["TD_NETWORKS", "posterior_z2", "posterior_z1", "forward", "log_weights", "loss_and_grads"]

TD_NETWORKS = ("q_d", "q_z2", "q_z1", "p_z1", "p_x")


def posterior_z2(p, spec: HVAESpec, X, ws: Workspace):
    """Features ``d = q_d(X)`` and :math:`q(z_2|x)` ``[eq:hvae-td-inference]``.

    Returns
    -------
    mu2, lv2 : ndarray of shape (N, Z2)
    hs_d : list of ndarray
        ``[X, h_1, ..., h_K]``; ``d = hs_d[-1]`` (N, Hd).
    hs_q2, W_q2 : the activations and fused head weights of ``q_z2`` (for the backward pass).
    """
    hs_d = _mlp(p, "q_d", len(spec.widths("q_d")), X, spec.activation, ws, "q_d.h")
    mu2, lv2, hs_q2, W_q2 = gaussian_net(p, spec, "q_z2", hs_d[-1], ws)
    return mu2, lv2, hs_d, hs_q2, W_q2


def posterior_z1(p, spec: HVAESpec, d, z2, ws: Workspace):
    """:math:`q(z_1|z_2, x)` from ``c = [d, z2]`` ``[eq:hvae-td-inference]``.

    Parameters
    ----------
    d : ndarray of shape (N, Hd)
    z2 : ndarray of shape (L, N, Z2)
        ``d`` is repeated for each of the L samples: row ``l N + n`` of ``c`` is ``[d_n, z2_ln]``.

    Returns
    -------
    mu1, lv1 : ndarray of shape (L N, Z1)
    hs_q1, W_q1 : the activations (``hs_q1[0] = c``) and fused head weights of ``q_z1``.
    """
    L, N, Z2 = z2.shape
    Hd = d.shape[1]
    c = ws.get("c", (L, N, Hd + Z2))
    c[:, :, :Hd] = d
    c[:, :, Hd:] = z2
    mu1, lv1, hs_q1, W_q1 = gaussian_net(p, spec, "q_z1", c.reshape(L * N, Hd + Z2), ws)
    return mu1, lv1, hs_q1, W_q1


def forward(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace, w=None):
    """Everything the loss and the log-weights need, for R = L N rows (row ``l N + n`` is example n).

    Parameters
    ----------
    X : ndarray of shape (N, D)
    eps1 : ndarray of shape (L, N, Z1)
        Noise of ``z1`` (sampled second).
    eps2 : ndarray of shape (L, N, Z2)
        Noise of ``z2`` (sampled first).
    w : float or None
        Row weight of the reconstruction gradient (``1/R``); None skips it.

    Returns
    -------
    dict of arrays: ``mu2, lv2, s2`` (N, Z2), ``z2`` (R, Z2), ``mu1, lv1, s1, z1`` (R, Z1), ``mup, lvp``,
    ``ep = e^{-lvp}``, ``r = z1 - mup``, ``u = r ep``, ``nll`` (R,), ``d_out`` (or None), the activations
    ``hs_d, hs_q2, hs_q1, hs_p1, hs_px`` and fused head weights ``W_q2, W_q1, W_p1``.
    """
    L, N, Z1 = eps1.shape
    Z2 = eps2.shape[2]
    R = L * N
    dt = X.dtype
    mu2, lv2, hs_d, hs_q2, W_q2 = posterior_z2(p, spec, X, ws)  # q(z2|x)  [eq:hvae-td-inference]
    s2 = ws.get("s2", (N, Z2))
    np.multiply(lv2, dt.type(0.5), out=s2)
    np.exp(s2, out=s2)
    z2 = ws.get("z2", (L, N, Z2))
    np.multiply(eps2, s2, out=z2)
    z2 += mu2  # z2 = mu2(x) + sigma2(x) eps2  [eq:hvae-td-reparam]
    mu1, lv1, hs_q1, W_q1 = posterior_z1(p, spec, hs_d[-1], z2, ws)  # q(z1|z2, x)
    z2 = z2.reshape(R, Z2)
    s1 = ws.get("s1", (R, Z1))
    np.multiply(lv1, dt.type(0.5), out=s1)
    np.exp(s1, out=s1)
    z1 = ws.get("z1", (R, Z1))
    np.multiply(eps1.reshape(R, Z1), s1, out=z1)
    z1 += mu1  # z1 = mu1(d, z2) + sigma1(d, z2) eps1  [eq:hvae-td-reparam]
    mup, lvp, hs_p1, W_p1 = gaussian_net(p, spec, "p_z1", z2, ws)  # p(z1|z2)  [eq:hvae-model]
    ep, r, u = ws.get("ep", (R, Z1)), ws.get("r", (R, Z1)), ws.get("u_p", (R, Z1))
    np.negative(lvp, out=ep)
    np.exp(ep, out=ep)  # 1 / sigma_p^2
    np.subtract(z1, mup, out=r)
    np.multiply(r, ep, out=u)  # u = (z1 - mu_p) / sigma_p^2
    out, hs_px = logits_net(p, spec, z1, ws)
    d_out = None if w is None else ws.get("d_out", out.shape)
    B = min(R, BLOCK_ROWS)
    nll = bernoulli_nll_grad(out, X, w, grad=d_out, db=ws.get("d_out.sum", (spec.n_features,)),
                             t=ws.get("t", (B, spec.n_features)), u=ws.get("u", (B, spec.n_features)),
                             nll=ws.get("nll", (R,)))  # -log p(x|z1)  [eq:vae-bernoulli]
    return dict(mu2=mu2, lv2=lv2, s2=s2, z2=z2, mu1=mu1, lv1=lv1, s1=s1, z1=z1, mup=mup, lvp=lvp, ep=ep, r=r, u=u,
                nll=nll, d_out=d_out, hs_d=hs_d, hs_q2=hs_q2, hs_q1=hs_q1, hs_p1=hs_p1, hs_px=hs_px, W_q2=W_q2,
                W_q1=W_q1, W_p1=W_p1)


def _kl1_parts(f, ws: Workspace):
    """``dm = mu1 - mu_p``, ``um = dm e^{-lvp}`` and ``ve = e^{lv1 - lvp}`` (= sigma1^2 / sigma_p^2), (R, Z1) each."""
    shape = f["mu1"].shape
    dm, um, ve = ws.get("dm", shape), ws.get("um", shape), ws.get("ve", shape)
    np.subtract(f["mu1"], f["mup"], out=dm)
    np.multiply(dm, f["ep"], out=um)
    np.subtract(f["lv1"], f["lvp"], out=ve)
    np.exp(ve, out=ve)
    return dm, um, ve


def log_weights(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace):
    """Per-sample log-weights and the spec's ELBO estimate, both (L, N) float64.

    ``log_w`` :math:`= \\log p(x,z_1,z_2) - \\log q(z_2|x) - \\log q(z_1|z_2,x)` ``[eq:hvae-td-log-w]``;
    ``est`` is the estimate the training loss uses ``[eq:hvae-td-estimator]`` (``log_w`` for ``"mc"``).
    """
    L, N, _ = eps1.shape
    f = forward(p, spec, X, eps1, eps2, ws)
    rows = lambda a: np.sum(a, axis=-1, dtype=np.float64).reshape(L, N)
    # each log density without its -dim/2 log(2 pi): those cancel between p(z1|z2) and q(z1|z2,x), p(z2) and q(z2|x)
    log_px = -f["nll"].astype(np.float64).reshape(L, N)
    log_p1 = -0.5 * rows(f["r"] * f["u"] + f["lvp"])  # log p(z1|z2)  [eq:hvae-model]
    log_q1 = -0.5 * (rows(eps1 * eps1) + rows(f["lv1"]))  # log q(z1|z2,x)  [eq:vae-log-q]
    log_q2 = -0.5 * (rows(eps2 * eps2) + np.sum(f["lv2"], axis=1, dtype=np.float64))  # log q(z2|x)  [eq:vae-log-q]
    log_p2 = -0.5 * rows(f["z2"] * f["z2"])  # log p(z2)
    log_w = log_px + log_p1 + log_p2 - log_q1 - log_q2  # [eq:hvae-td-log-w]
    if spec.estimator == "mc":
        return log_w, log_w
    mu2, lv2, s2 = f["mu2"], f["lv2"], f["s2"]
    kl2 = 0.5 * np.sum(mu2 * mu2 + s2 * s2 - 1 - lv2, axis=1, dtype=np.float64)  # (N,)  [eq:hvae-kl2]
    dm, um, ve = _kl1_parts(f, ws)
    kl1 = 0.5 * rows(f["lvp"] - f["lv1"] + ve + dm * um - 1)  # [eq:hvae-td-kl1]
    return log_w, log_px - kl1 - kl2  # [eq:hvae-td-estimator]


def loss_and_grads(p, spec: HVAESpec, X, eps1, eps2, ws: Workspace, grads=None, beta: float = 1.0):
    """Mean negative ELBO estimate of a batch and its exact gradients for the given noise (top-down).

    Arguments and returns as :func:`probgen.models._hvae_backward.loss_and_grads`; the loss is
    :math:`J_\\beta` ``[eq:hvae-td-loss]``.
    """
    L, N, Z1 = eps1.shape
    Z2 = eps2.shape[2]
    R = L * N
    dt = X.dtype
    w = 1.0 / R
    f = forward(p, spec, X, eps1, eps2, ws, None if grads is None else w)
    mu2, lv2, s2, z2, lv1, lvp, r, u = (f[k] for k in ("mu2", "lv2", "s2", "z2", "lv1", "lvp", "r", "u"))
    analytic = spec.estimator == "analytic"
    sum64 = lambda a: float(np.sum(a, dtype=np.float64))
    rec = sum64(f["nll"]) / R
    if analytic:  # KL(q(z1|z2,x) || p(z1|z2)), then KL(q(z2|x) || p(z2)) counted once per sample  [eq:hvae-td-kl1]
        dm, um, ve = _kl1_parts(f, ws)
        t1 = 0.5 * (float(np.vdot(dm, um)) + sum64(ve) + sum64(lvp) - sum64(lv1) - R * Z1) / R
        t2 = 0.5 * (L * (float(np.vdot(mu2, mu2)) + float(np.vdot(s2, s2)) - sum64(lv2)) - R * Z2) / R  # [eq:hvae-kl2]
    else:  # [log q(z1|z2,x) - log p(z1|z2)] and [log q(z2|x) - log p(z2)]  [eq:hvae-td-log-w]
        t1 = 0.5 * (float(np.vdot(r, u)) + sum64(lvp) - float(np.vdot(eps1, eps1)) - sum64(lv1)) / R
        t2 = 0.5 * (float(np.vdot(z2, z2)) - float(np.vdot(eps2, eps2)) - L * sum64(lv2)) / R
    loss, elbo = rec + beta * (t1 + t2), -(rec + t1 + t2)
    if grads is None:
        return loss, elbo
    g = grads
    bw = dt.type(beta * w)
    half = dt.type(0.5)
    # ---------------------------------------------------------------- p(x|z1)  [eq:hvae-backward-logits]
    d_z1 = _net_backward(p, g, spec, "p_x", f["d_out"], f["hs_px"], ws, p["p_x.out.W"], True,
                         ws.get("d_out.sum", (spec.n_features,)))
    # ---------------------------------------------------------------- the layer-1 term  [eq:hvae-td-backward-layer1]
    d_hp, d_hq1 = ws.get("p_z1.d_y", (R, 2 * Z1)), ws.get("q_z1.d_y", (R, 2 * Z1))
    d_mup, d_lvp = d_hp[:, :Z1], d_hp[:, Z1:]
    d_mu1, d_lv1 = d_hq1[:, :Z1], d_hq1[:, Z1:]
    if analytic:
        np.multiply(dm, um, out=d_lvp)
        d_lvp += ve
        d_lvp -= 1
        d_lvp *= -half * bw  # d/dlog_var_p = beta w (1 - ve - dm^2 e^{-lvp}) / 2
        np.multiply(um, -bw, out=d_mup)  # d/dmu_p = -beta w dm e^{-lvp}
        np.subtract(d_z1, d_mup, out=d_mu1)  # d/dmu1 = dz1 + beta w dm e^{-lvp}
        np.multiply(ve, half * bw, out=d_lv1)
        d_lv1 -= half * bw  # d/dlog_var1 of the KL: beta w (ve - 1) / 2
    else:
        _prior1_backward(r, u, bw, d_hp, d_z1)  # the sampled -log p(z1|z2)  [eq:hvae-backward-prior1]
        np.copyto(d_mu1, d_z1)  # dz1/dmu1 = 1
        d_lv1[...] = -half * bw  # the entropy term -1/2 log_var1
    d_z1 *= eps1.reshape(R, Z1)
    d_z1 *= f["s1"]
    d_z1 *= half
    d_lv1 += d_z1  # dz1/dlog_var1 = sigma1 eps1 / 2  [eq:hvae-td-reparam]
    # ---------------------------------------------------------------- into z2 and d  [eq:hvae-td-backward-z2]
    hs_d = f["hs_d"]
    Hd = hs_d[-1].shape[1]
    d_c = _net_backward(p, g, spec, "q_z1", d_hq1, f["hs_q1"], ws, f["W_q1"], True)  # (R, Hd + Z2)
    d_z2 = _net_backward(p, g, spec, "p_z1", d_hp, f["hs_p1"], ws, f["W_p1"], True)  # (R, Z2)
    d_z2 += d_c[:, Hd:]  # z2 feeds q(z1|z2,x) as well as p(z1|z2)
    if not analytic:
        d_z2 += bw * z2  # the prior term -log p(z2) = 1/2 |z2|^2
    # ---------------------------------------------------------------- q(z2|x)  [eq:hvae-td-backward-q2]
    d_hq2 = ws.get("q_z2.d_y", (N, 2 * Z2))
    d_mu2, d_lv2 = d_hq2[:, :Z2], d_hq2[:, Z2:]
    d_z2 = d_z2.reshape(L, N, Z2)
    np.sum(d_z2, axis=0, out=d_mu2)
    d_z2 *= eps2
    np.sum(d_z2, axis=0, out=d_lv2)
    d_lv2 *= s2
    d_lv2 *= half
    b2 = dt.type(beta / N)  # each example's z2 term, once per sample, weight w: beta / N in all
    if analytic:  # the KL of q(z2|x) from N(0, I)  [eq:hvae-backward-kl2]
        d_mu2 += b2 * mu2
        d_lv2 += (half * b2) * (s2 * s2 - 1)
    else:
        d_lv2 -= half * b2  # the entropy term -1/2 log_var2
    K_d = len(hs_d) - 1
    d_d = _net_backward(p, g, spec, "q_z2", d_hq2, f["hs_q2"], ws, f["W_q2"], K_d > 0)
    # ---------------------------------------------------------------- the features d = q_d(x)  [eq:hvae-td-backward-d]
    if K_d:
        d_d += d_c.reshape(L, N, -1)[:, :, :Hd].sum(axis=0)
        _hidden_backward(p, g, spec, "q_d", d_d, hs_d, ws, False)
    return loss, elbo
