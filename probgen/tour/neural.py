"""Tour section: the autoregressive models on the binarised digits.

First-order Markov chain, FVSBN, NADE, PixelCNN and PixelRNN, each with its exact held-out
log-likelihood; the latent-variable models (``latent.py``) are scored on the same images.
"""
from __future__ import annotations

import numpy as np

from .report import Row, Section

BIN = "binarised {0,1}^64"


def _budget(quick: bool, full: int, small: int) -> int:
    return small if quick else full


def run_autoregressive(data, out, *, rng, quick: bool, progress: bool) -> Section:
    from .. import plotting
    from ..models import FVSBN, NADE, MarkovChain, PixelCNN, PixelRNN

    sec = Section("Autoregressive models on binarised digits (exact likelihood)")
    Xtr, Xte = data.train_bin, data.test_bin
    curves = {}

    markov = MarkovChain(alpha=1.0, rng=rng).fit(Xtr, progress=progress)
    sec.rows.append(Row("Markov chain, first order (counts)", BIN, "exact", float(markov.score(Xte)),
                        f"{markov.n_parameters_} parameters"))

    fv = FVSBN(rng=rng).fit(Xtr, epochs=_budget(quick, 150, 20), batch_size=100, lr=3e-3,
                            validation=Xte, progress=progress, keep_best=False)
    sec.rows.append(Row("FVSBN", BIN, "exact", float(fv.score(Xte)), f"{fv.n_parameters_} parameters"))
    curves["FVSBN"] = fv.history_["validation_nll"]

    nade = NADE(n_hidden=_budget(quick, 100, 32), rng=rng).fit(
        Xtr, epochs=_budget(quick, 150, 20), batch_size=100, lr=3e-3, validation=Xte, progress=progress)
    sec.rows.append(Row(f"NADE (H={nade.n_hidden})", BIN, "exact", float(nade.score(Xte)),
                        f"{nade.n_parameters_} parameters"))
    curves["NADE"] = nade.history_["validation_nll"]

    side = int(round(np.sqrt(data.dim)))
    img_tr, img_te = Xtr.reshape(-1, side, side), Xte.reshape(-1, side, side)
    pcnn = PixelCNN((side, side), channels=_budget(quick, 32, 16), n_layers=_budget(quick, 4, 2),
                    first_kernel_size=5, levels=2, rng=rng)
    pcnn.fit(img_tr, epochs=_budget(quick, 40, 4), batch_size=64, lr=3e-3, validation=img_te, progress=progress)
    sec.rows.append(Row("PixelCNN (mask A 5x5 + mask-B blocks)", BIN, "exact", float(pcnn.score(img_te)),
                        f"{sum(p.size for p in pcnn.named_parameters().values())} parameters"))
    curves["PixelCNN"] = pcnn.history_["validation_nll"]

    prnn = PixelRNN((side, side), hidden=_budget(quick, 64, 16), levels=2, rng=rng)
    prnn.fit(img_tr, epochs=_budget(quick, 30, 3), batch_size=32, lr=3e-3, validation=img_te, progress=progress)
    sec.rows.append(Row(f"PixelRNN (one LSTM layer, {prnn.hidden} units)", BIN, "exact", float(prnn.score(img_te)),
                        f"{sum(p.size for p in prnn.named_parameters().values())} parameters"))
    curves["PixelRNN"] = prnn.history_["validation_nll"]

    plotting.curves(curves, xlabel="epoch", ylabel="held-out NLL (nats)",
                    title="Autoregressive models: held-out NLL while training", path=out / "ar_curves.png")
    sec.figures.append(("ar_curves.png", "Held-out negative log-likelihood per epoch."))
    for name, model in (("Markov", markov), ("FVSBN", fv), ("NADE", nade), ("PixelCNN", pcnn), ("PixelRNN", prnn)):
        s = model.sample(64, rng=rng)
        fname = f"{name.lower()}_samples.png"
        plotting.image_grid(np.asarray(s, dtype=float).reshape(-1, side, side), nrow=8,
                            title=f"{name} samples", path=out / fname)
        sec.figures.append((fname, f"Samples from {name}, drawn pixel by pixel."))
    sec.text = ("Exact log-likelihoods: each model factorises p(x) by the chain rule in raster order, so the "
                "held-out numbers are exact, not bounds.")
    return sec
