"""Tour sections: the latent-variable networks on the digits.

* ``run_latent``: the L2 autoencoder, the VAE (ELBO and the importance-sampled estimate
  ``[eq:iwae]``), a 2-D-latent VAE for its latent manifold, and the GAN;
* ``run_structured``: the hierarchical VAE and the VQ-VAE with its PixelCNN prior (a bound
  ``[eq:vq-bound]``), on the same binarised held-out digits as every other binary model.
"""
from __future__ import annotations

import numpy as np

from .neural import BIN, _budget
from .report import Row, Section


def run_latent(data, out, *, rng, quick: bool, progress: bool) -> Section:
    from .. import plotting
    from ..metrics import mmd2, mmd_permutation_test
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
    # a kernel two-sample statistic instead [eq:mmd-unbiased]: GAN samples vs held-out digits, beside the
    # same statistic for a second real sample (the training digits), which is what "indistinguishable" looks like
    n = Xc_te.shape[0]
    mmd_gan, p_gan = mmd_permutation_test(gan.sample(n, rng=rng), Xc_te, n_permutations=_budget(quick, 500, 100),
                                          rng=rng)
    mmd_real = mmd2(Xc_tr[:n], Xc_te)
    plotting.curves({"mean D(x)": gan.history_["d_real"], "mean D(G(z))": gan.history_["d_fake"]},
                    xlabel="epoch", ylabel="discriminator output", title="GAN: the discriminator's view",
                    path=out / "gan_d.png")
    sec.figures.append(("gan_d.png", "Mean D on real and generated digits per epoch (1/2 at the game's fixed point)."))
    sec.text = (f"The autoencoder has no likelihood; its held-out mean squared error per pixel is {mse:.4f}. "
                f"The GAN has no likelihood either: the unbiased MMD^2 (Gaussian kernel, median bandwidth) between "
                f"{n} of its samples and the held-out digits is {mmd_gan:.4f} (permutation p = {p_gan:.3f}), against "
                f"{mmd_real:.4f} between {n} training digits and the same held-out digits. "
                "The VAE's ELBO is a lower bound on log p(x); the importance-sampled estimate tightens it.")
    return sec


def run_structured(data, out, *, rng, quick: bool, progress: bool) -> Section:
    from .. import plotting
    from ..models import VQVAE, HierarchicalVAE

    sec = Section("Hierarchical and discrete latents: two-layer VAE, VQ-VAE with a PixelCNN prior")
    Xtr, Xte = data.train_bin.astype(float), data.test_bin.astype(float)
    side = int(round(np.sqrt(data.dim)))

    hvae = HierarchicalVAE(latent_dims=(16, 8), hidden=((128,), (64,)), rng=rng).fit(
        Xtr, epochs=_budget(quick, 300, 30), batch_size=50, lr=2e-3, validation=Xte, progress=progress,
        kl_warmup=20)
    k = _budget(quick, 2000, 200)
    name = "Hierarchical VAE (z1=16, z2=8, bottom-up q)"
    sec.rows.append(Row(name, BIN, "lower bound (ELBO)", float(hvae.elbo(Xte, rng=rng).mean())))
    sec.rows.append(Row(name, BIN, f"estimate (IWAE, k={k})", float(hvae.log_likelihood(Xte, k=k, rng=rng).mean()),
                        "importance-sampled; a lower bound in expectation"))
    plotting.image_grid(hvae.sample(64, rng=rng, return_mean=True).reshape(-1, side, side), nrow=8,
                        title="Hierarchical VAE samples (decoder means)", path=out / "hvae_samples.png")
    sec.figures.append(("hvae_samples.png", "Hierarchical VAE: decoder means of z2 ~ N(0, I), z1 ~ p(z1 | z2)."))

    vq = VQVAE(n_latents=4, code_dim=8, n_codes=16, hidden=(128,), codebook_update="ema", restart_dead=True, rng=rng)
    vq.fit(Xtr, epochs=_budget(quick, 60, 10), batch_size=50, lr=2e-3, progress=progress)
    vq.fit_prior(Xtr, channels=32, n_layers=3, epochs=_budget(quick, 40, 5), batch_size=50, lr=3e-3,
                 validation=Xte, progress=progress, rng=rng)
    bound = vq.log_likelihood_bound(Xte)
    pp = vq.perplexity(Xte)
    sec.rows.append(Row("VQ-VAE (L=4 codes of K=16) + PixelCNN prior", BIN, "lower bound (log p(z*) + log p(x|z*))",
                        float(bound.mean()), f"code perplexity {pp:.1f} of {vq.n_codes}"))
    plotting.image_grid(vq.sample(64, rng=rng).reshape(-1, side, side), nrow=8,
                        title="VQ-VAE samples: prior codes, decoded (Bernoulli means)", path=out / "vqvae_samples.png")
    sec.figures.append(("vqvae_samples.png", "VQ-VAE: a 2x2 code grid drawn from the PixelCNN prior, decoded."))
    plotting.curves({"hierarchical VAE held-out ELBO": hvae.history_["validation_elbo"],
                     "VQ-VAE prior held-out NLL of codes (negated)": [-v for v in vq.prior_.history_["validation_nll"]]},
                    xlabel="epoch", ylabel="nats", title="Training curves", path=out / "structured_curves.png")
    sec.figures.append(("structured_curves.png", "Held-out ELBO of the hierarchical VAE; held-out code "
                                                 "log-likelihood of the VQ-VAE's prior."))
    sec.text = ("The VQ-VAE's number is a bound on the log-probability of the binary image because the latent is "
                "discrete: p(x) = sum over code grids of p(z) p(x|z) >= p(z*) p(x|z*) for the encoder's z*.")
    return sec
