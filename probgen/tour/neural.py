"""Tour sections: the neural models on the digits.

* binary models on the thresholded digits: first-order Markov chain, FVSBN,
  NADE, PixelCNN (exact log-likelihoods) and the VAE (ELBO, a lower bound, and
  the importance-sampled estimate ``[eq:iwae]``), all on the same held-out images;
* the L2 autoencoder and a 2-D-latent VAE for pictures (reconstructions, the
  latent manifold).
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
    for name, model in (("NADE", nade), ("PixelCNN", pcnn), ("PixelRNN", prnn)):
        s = model.sample(64, rng=rng)
        fname = f"{name.lower()}_samples.png"
        plotting.image_grid(np.asarray(s, dtype=float).reshape(-1, side, side), nrow=8,
                            title=f"{name} samples", path=out / fname)
        sec.figures.append((fname, f"Samples from {name}, drawn pixel by pixel."))
    sec.text = ("Exact log-likelihoods: each model factorises p(x) by the chain rule in raster order, so the "
                "held-out numbers are exact, not bounds.")
    return sec


def run_latent(data, out, *, rng, quick: bool, progress: bool) -> Section:
    from .. import plotting
    from ..models import GAN, VAE, Autoencoder

    sec = Section("Latent-variable networks: autoencoder, VAE and GAN")
    Xtr, Xte = data.train_bin.astype(float), data.test_bin.astype(float)
    side = int(round(np.sqrt(data.dim)))
    epochs = _budget(quick, 300, 30)

    vae = VAE(latent_dim=8, hidden=(128,), likelihood="bernoulli", rng=rng).fit(
        Xtr, epochs=epochs, batch_size=50, lr=2e-3, validation=Xte, progress=progress, kl_warmup=10)
    k = _budget(quick, 2000, 200)
    sec.rows.append(Row("VAE (z=8, 64-128-8-128-64)", BIN, "lower bound (ELBO)",
                        float(vae.elbo(Xte, rng=rng).mean())))
    sec.rows.append(Row("VAE (z=8, 64-128-8-128-64)", BIN, f"estimate (IWAE, k={k})",
                        float(vae.log_likelihood(Xte, k=k, rng=rng).mean()),
                        "importance-sampled; a lower bound in expectation"))
    hist = vae.history_
    plotting.curves({"train ELBO": hist["train_elbo"], "held-out ELBO": hist["validation_elbo"]},
                    xlabel="epoch", ylabel="ELBO (nats)", title="VAE: ELBO per epoch", path=out / "vae_elbo.png")
    sec.figures.append(("vae_elbo.png", "VAE training and held-out ELBO per epoch."))
    plotting.image_grid(vae.sample(64, rng=rng, return_mean=True).reshape(-1, side, side), nrow=8,
                        title="VAE samples (decoder means)", path=out / "vae_samples.png")
    sec.figures.append(("vae_samples.png", "VAE samples: decoder means at z ~ N(0, I)."))

    vae2 = VAE(latent_dim=2, hidden=(128,), likelihood="bernoulli", rng=rng).fit(
        Xtr, epochs=epochs, batch_size=50, lr=2e-3, progress=progress)
    plotting.latent_manifold(vae2.decode, n=15, image_shape=(side, side),
                             title="2-D VAE latent manifold (inverse Gaussian CDF grid)",
                             path=out / "vae_manifold.png")
    sec.figures.append(("vae_manifold.png", "Decoder means over a grid of z = Phi^-1(u) (AEVB, Fig. 4)."))
    sec.rows.append(Row("VAE (z=2)", BIN, "lower bound (ELBO)", float(vae2.elbo(Xte, rng=rng).mean())))

    Xc_tr, Xc_te = data.train_cont, data.test_cont
    ae = Autoencoder(latent_dim=8, hidden=(128,), rng=rng).fit(Xc_tr, epochs=epochs, batch_size=50, lr=2e-3,
                                                               progress=progress)
    mse = float(ae.reconstruction_error(Xc_te).mean())
    plotting.reconstructions(Xc_te[:10], ae.reconstruct(Xc_te[:10]), image_shape=(side, side),
                             title=f"Autoencoder (z=8): held-out reconstructions, MSE {mse:.4f}",
                             path=out / "ae_reconstructions.png")
    sec.figures.append(("ae_reconstructions.png", "L2 autoencoder: originals (top) and reconstructions."))
    gan = GAN(latent_dim=8, generator_hidden=(128, 128), discriminator_hidden=(128, 128), rng=rng).fit(
        Xc_tr, epochs=_budget(quick, 300, 20), batch_size=64, lr=5e-4, progress=progress)
    plotting.image_grid(np.clip(gan.sample(64, rng=rng), 0, 1).reshape(-1, side, side), nrow=8,
                        title="GAN samples (non-saturating loss)", path=out / "gan_samples.png")
    sec.figures.append(("gan_samples.png", "GAN samples on the dequantised digits (clipped to [0,1]); "
                                           "a GAN has no likelihood, so it has no row in the table."))
    plotting.curves({"mean D(x)": gan.history_["d_real"], "mean D(G(z))": gan.history_["d_fake"]},
                    xlabel="epoch", ylabel="discriminator output", title="GAN: the discriminator's view",
                    path=out / "gan_d.png")
    sec.figures.append(("gan_d.png", "Mean D on real and generated digits per epoch (1/2 at the game's fixed point)."))
    sec.text = (f"The autoencoder has no likelihood; its held-out mean squared error per pixel is {mse:.4f}. "
                "The VAE's ELBO is a lower bound on log p(x); the importance-sampled estimate tightens it.")
    return sec
