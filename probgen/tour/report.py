"""Data preparation, the section registry and the HTML report of the tour."""
from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .._validation import check_rng


@dataclass
class Row:
    """One line of the model table: a held-out log-likelihood in nats per image."""

    model: str
    data: str  # which version of the held-out digits it scores
    kind: str  # "exact", "lower bound", "estimate"
    nats: float
    note: str = ""


@dataclass
class Section:
    title: str
    rows: list = field(default_factory=list)
    figures: list = field(default_factory=list)  # (file name, caption)
    text: str = ""
    seconds: float = 0.0


@dataclass
class TourData:
    """The 8x8 digits split once, in the three views the models need.

    ``*_levels`` are grey levels 0..16, ``*_cont`` the dequantised pixels in [0,1]
    ``[eq:dequantization]``, ``*_bin`` the binarised pixels (threshold 0.5).
    """

    train_levels: np.ndarray
    test_levels: np.ndarray
    train_cont: np.ndarray
    test_cont: np.ndarray
    train_bin: np.ndarray
    test_bin: np.ndarray
    n_levels: int = 17

    @property
    def dim(self) -> int:
        return self.train_levels.shape[1]


def prepare_data(rng, test_fraction: float = 0.25) -> TourData:
    from ..datasets import binarize, dequantize, load_digits

    digits = load_digits()
    levels = np.asarray(digits.levels)
    order = rng.permutation(levels.shape[0])
    n_test = int(round(test_fraction * levels.shape[0]))
    test, train = order[:n_test], order[n_test:]
    cont = dequantize(levels, n_levels=17, rng=rng)
    binary = binarize(levels / 16.0, method="threshold")
    return TourData(
        train_levels=levels[train], test_levels=levels[test],
        train_cont=cont[train], test_cont=cont[test],
        train_bin=binary[train], test_bin=binary[test],
    )


def _sections():
    from . import classical, latent, neural

    return [classical.run, neural.run_autoregressive, latent.run_latent, latent.run_structured]


_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-family: monospace; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 480px; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; max-width: 480px; }
"""


def _write_html(out: Path, sections, data: TourData, total_s: float, quick: bool, seed: int) -> Path:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>probgen tour</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>probgen tour — the embedded 8x8 digits</h1>",
        f"<p>{data.train_levels.shape[0]} training and {data.test_levels.shape[0]} held-out images "
        f"(scikit-learn's bundled digits, 17 grey levels), seed {seed}{', quick mode' if quick else ''}; "
        f"total time {total_s:.1f} s.</p>",
        "<p>Continuous models see <em>dequantised</em> pixels: (level + u)/17 with u ~ U(0,1), so a density on "
        "[0,1]<sup>64</sup> is meaningful. Its held-out log-density L relates to the discrete grey levels by "
        "log P(levels) ≥ L − 64·log 17 (docs: <code>eq:dequantization</code>), shown in the last column. "
        "Binary models see the digits thresholded at 0.5; their numbers are log-probabilities of binary "
        "images and are comparable only with each other.</p>",
        "<h2>Held-out log-likelihood per image (nats, higher is better)</h2>",
        "<table><tr><th>model</th><th>data</th><th>kind</th><th>log-likelihood</th>"
        "<th>bound on log P(levels)</th><th>note</th></tr>",
    ]
    offset = data.dim * np.log(data.n_levels)
    for sec in sections:
        for r in sec.rows:
            discrete = f"{r.nats - offset:.2f}" if r.data.startswith("dequantised") else ""
            parts.append(
                f"<tr><td>{e(r.model)}</td><td>{e(r.data)}</td><td>{e(r.kind)}</td>"
                f"<td class='num'>{r.nats:.2f}</td><td class='num'>{discrete}</td><td>{e(r.note)}</td></tr>"
            )
    parts.append("</table>")
    for sec in sections:
        parts.append(f"<h2>{e(sec.title)}</h2><p><small>{sec.seconds:.1f} s</small></p>")
        if sec.text:
            parts.append(f"<p>{e(sec.text)}</p>")
        for fname, caption in sec.figures:
            parts.append(
                f"<figure><img src='{e(fname)}' alt='{e(caption)}'><figcaption>{e(caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, index)
    return index


def run_tour(out="tour", *, quick: bool = False, seed: int = 0, progress: bool = True) -> Path:
    """Run every section of the tour and write ``out/index.html``; return its path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a directory, but {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    rng = check_rng(seed)
    t0 = time.perf_counter()
    data = prepare_data(rng)
    sections = []
    # The digits are 8x8: every matrix product here is tiny, and splitting one over BLAS threads only
    # adds synchronisation (measured on 2 cores: a training step 9.6 ms with one thread, up to 1.1 s with
    # two under load).  The limit holds for the tour only and is lifted when it returns.
    with threadpool_limits(limits=1, user_api="blas"):
        for run in _sections():
            t = time.perf_counter()
            sec = run(data, out, rng=rng, quick=quick, progress=progress)
            sec.seconds = time.perf_counter() - t
            sections.append(sec)
    return _write_html(out, sections, data, time.perf_counter() - t0, quick, seed)
