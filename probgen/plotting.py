"""Figures: image grids, the 2-D latent manifold, reconstructions, training/EM curves, BIC curves.

Every function takes data, returns a :class:`matplotlib.figure.Figure`, and with ``path=``
also writes it as PNG.  Figures are built with the object-oriented API (``Figure`` plus the
Agg canvas), never through ``pyplot``: no global figure registry, nothing to close, no GUI
backend touched, safe in threads and on headless machines.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._validation import check_array, check_positive_int

__all__ = ["image_grid", "latent_grid", "latent_manifold", "reconstructions", "curves", "bic_curve", "tile"]


def _new_figure(figsize) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path) -> Figure:
    if path is not None:
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"directory does not exist: {path.parent}")
        fig.savefig(path, format="png", dpi=100)
    return fig


def _as_images(images, name: str, image_shape) -> np.ndarray:
    """(N, H, W) float images from (N, H, W) or, with ``image_shape``, (N, H*W)."""
    A = check_array(images, name, ndim=(2, 3), dtype=np.float64)
    if A.ndim == 2:
        if image_shape is None:
            raise ValueError(f"{name} has shape {A.shape}; pass image_shape=(H, W) for flat images")
        h, w = (check_positive_int(s, "image_shape") for s in image_shape)
        if h * w != A.shape[1]:
            raise ValueError(f"{name} rows have {A.shape[1]} pixels, but image_shape {(h, w)} needs {h * w}")
        A = A.reshape(-1, h, w)
    elif image_shape is not None and tuple(image_shape) != A.shape[1:]:
        raise ValueError(f"{name} has images of shape {A.shape[1:]}, but image_shape is {tuple(image_shape)}")
    return A


def tile(images, nrow: int, ncol: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Mosaic of (N, H, W) images, row-major, on an ``nrow x ncol`` grid with ``pad`` pixels between.

    Returns an array of shape (nrow*H + (nrow+1)*pad, ncol*W + (ncol+1)*pad); unused cells hold ``pad_value``.
    """
    n, h, w = images.shape
    if n > nrow * ncol:
        raise ValueError(f"{n} images do not fit a {nrow}x{ncol} grid")
    out = np.full((nrow * h + (nrow + 1) * pad, ncol * w + (ncol + 1) * pad), pad_value, dtype=np.float64)
    for k in range(n):
        i, j = divmod(k, ncol)
        r, c = pad + i * (h + pad), pad + j * (w + pad)
        out[r:r + h, c:c + w] = images[k]
    return out


def _show(ax, mosaic, vmin, vmax, cmap) -> None:
    ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()


def image_grid(images, nrow: int | None = None, title: str | None = None, *, image_shape=None,
               vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray",
               path=None) -> Figure:
    """A grid of images (samples, data) in one panel.

    Parameters
    ----------
    images : array_like of shape (N, H, W), or (N, H*W) with ``image_shape=(H, W)``
    nrow : int or None
        Number of grid rows; the number of columns is ``ceil(N / nrow)``.  None: ``ceil(sqrt(N))``.
    title : str or None
    vmin, vmax : float or None
        Grey-scale limits (default [0, 1] for pixel means; None to autoscale).
    path : str or Path or None
        Also write the figure there as PNG.
    """
    A = _as_images(images, "images", image_shape)
    n = A.shape[0]
    nrow = math.ceil(math.sqrt(n)) if nrow is None else check_positive_int(nrow, "nrow")
    nrow = min(nrow, n)
    ncol = math.ceil(n / nrow)
    pad_value = np.nanmax(A) if vmax is None else vmax
    mosaic = tile(A, nrow, ncol, pad=1, pad_value=pad_value)
    scale = 6.0 / max(mosaic.shape)
    fig = _new_figure((max(2.0, mosaic.shape[1] * scale), max(2.0, mosaic.shape[0] * scale) + (0.4 if title else 0)))
    ax = fig.add_subplot()
    _show(ax, mosaic, vmin, vmax, cmap)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def latent_grid(n: int = 20) -> np.ndarray:
    """The (n*n, 2) latent points of the manifold plot, row-major from the top-left cell.

    Unit-square coordinates ``linspace(0, 1, n + 2)[1:-1]`` (the ends excluded, where the
    inverse CDF is infinite) mapped through the standard normal inverse CDF, as in the AEVB
    paper's Fig. 4.  Cell (i, j) holds ``z = (g[j], g[n - 1 - i])`` so z1 grows to the right
    and z2 grows upwards.
    """
    from scipy.stats import norm

    n = check_positive_int(n, "n")
    g = norm.ppf(np.linspace(0.0, 1.0, n + 2)[1:-1])
    z1, z2 = np.meshgrid(g, g[::-1])
    return np.column_stack([z1.ravel(), z2.ravel()])


def latent_manifold(decode_fn, n: int = 20, image_shape=(28, 28), title: str | None = None, *,
                    vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray",
                    path=None) -> Figure:
    """The learned 2-D data manifold: decoder means on a Gaussian-quantile grid of latents.

    Parameters
    ----------
    decode_fn : callable
        Maps latents of shape (n*n, 2) (from :func:`latent_grid`) to pixel means of shape
        (n*n, H*W) or (n*n, H, W).
    n : int
        Grid size per axis.
    image_shape : (H, W)
    """
    if not callable(decode_fn):
        raise TypeError(f"decode_fn must be callable, got {type(decode_fn).__name__}")
    Z = latent_grid(n)
    out = np.asarray(decode_fn(Z))
    if out.shape[:1] != (n * n,):
        raise ValueError(f"decode_fn returned shape {out.shape}; expected ({n * n}, H*W) for {n * n} latents")
    A = _as_images(out, "decode_fn output", image_shape)
    fig = _new_figure((6.0, 6.0 + (0.4 if title else 0)))
    ax = fig.add_subplot()
    _show(ax, tile(A, n, n, pad=0), vmin, vmax, cmap)
    ax.set_title(title or "latent manifold: decoder means at $z=\\Phi^{-1}(u)$")
    return _finish(fig, path)


def reconstructions(originals, recons, image_shape=None, title: str | None = None, *, ncol: int = 10,
                    vmin: float | None = 0.0, vmax: float | None = 1.0, cmap: str = "gray",
                    path=None) -> Figure:
    """Originals and their reconstructions in alternating rows (original above its reconstruction).

    ``originals`` and ``recons`` have the same shape, (N, H, W) or (N, H*W) with ``image_shape``.
    """
    A = _as_images(originals, "originals", image_shape)
    B = _as_images(recons, "recons", image_shape)
    if A.shape != B.shape:
        raise ValueError(f"originals {A.shape} and recons {B.shape} must have the same shape")
    ncol = min(check_positive_int(ncol, "ncol"), A.shape[0])
    n, h, w = A.shape
    blocks = math.ceil(n / ncol)
    pairs = np.full((2 * blocks * ncol, h, w), np.nan)
    for b in range(blocks):
        sl = slice(b * ncol, min(n, (b + 1) * ncol))
        k = sl.stop - sl.start
        pairs[2 * b * ncol:2 * b * ncol + k] = A[sl]
        pairs[(2 * b + 1) * ncol:(2 * b + 1) * ncol + k] = B[sl]
    pad_value = np.nanmax(A) if vmax is None else vmax
    mosaic = tile(np.nan_to_num(pairs, nan=pad_value), 2 * blocks, ncol, pad=1, pad_value=pad_value)
    fig = _new_figure((max(2.0, 0.6 * ncol), max(1.5, 1.2 * blocks) + 0.4))
    ax = fig.add_subplot()
    _show(ax, mosaic, vmin, vmax, cmap)
    ax.set_title(title or "originals (odd rows) and reconstructions (even rows)")
    return _finish(fig, path)


def _xy(name, value):
    if isinstance(value, tuple) and len(value) == 2:
        x = check_array(value[0], f"curves[{name!r}] x", ndim=1, allow_nonfinite=False)
        y = check_array(value[1], f"curves[{name!r}] y", ndim=1, allow_nonfinite=True)
        if x.shape != y.shape:
            raise ValueError(f"curves[{name!r}]: x has shape {x.shape} but y has {y.shape}")
        return x, y
    y = check_array(value, f"curves[{name!r}]", ndim=1, allow_nonfinite=True)
    return np.arange(1, y.size + 1), y


def curves(series: dict, xlabel: str = "iteration", ylabel: str = "", title: str | None = None, *,
           logy: bool = False, path=None) -> Figure:
    """Line plot of named sequences: ELBO per epoch, EM lower bounds per iteration, ...

    Parameters
    ----------
    series : dict of str -> sequence or (x, y) pair
        A plain sequence ``y`` is drawn against 1..len(y).  Non-finite values leave gaps.
    """
    if not isinstance(series, dict) or not series:
        raise ValueError("series must be a non-empty dict of name -> sequence")
    data = {str(k): _xy(k, v) for k, v in series.items()}
    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    for name, (x, y) in data.items():
        ax.plot(x, y, marker="." if y.size < 30 else None, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)


def bic_curve(ks, bic_values, aic_values=None, title: str | None = None, *, xlabel: str = "K",
              path=None) -> Figure:
    """BIC (and optionally AIC) against the number of components, the minimum marked."""
    k = check_array(ks, "ks", ndim=1)
    b = check_array(bic_values, "bic_values", ndim=1)
    if b.shape != k.shape:
        raise ValueError(f"bic_values has shape {b.shape} but ks has {k.shape}")
    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    best = int(np.argmin(b))
    ax.plot(k, b, marker="o", label="BIC")
    ax.plot([k[best]], [b[best]], marker="*", markersize=14, linestyle="none",
            label=f"min BIC at {xlabel}={k[best]:g}")
    if aic_values is not None:
        a = check_array(aic_values, "aic_values", ndim=1)
        if a.shape != k.shape:
            raise ValueError(f"aic_values has shape {a.shape} but ks has {k.shape}")
        ax.plot(k, a, marker="s", label="AIC")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title(title or "model selection")
    ax.grid(alpha=0.3)
    ax.legend()
    return _finish(fig, path)
