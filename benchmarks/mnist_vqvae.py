"""Train a VQ-VAE and its PixelCNN code prior on statically binarised MNIST within a time budget.

Reports, on the 10,000 test images: the reconstruction error (Bernoulli NLL :math:`-\\log p(x \\mid z^*)`
in nats per image, and the fraction of pixels wrong when the decoder mean is thresholded at 0.5), the
code perplexity ``[eq:vq-perplexity]`` (of K), and the likelihood bound
:math:`\\log p(z^*) + \\log p(x \\mid z^*) \\le \\log p(x)` ``[eq:vq-bound]`` (printed as an NLL bound in
nats: an upper bound on the model's test NLL, lower is better).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.mnist_vqvae --threads 1 \\
        --json mnist_vqvae.json --samples mnist_vqvae_samples.png

The VQ-VAE trains for ``--minutes`` (minibatch Adam, EMA codebook, dead-code restarts; the validation
loss of every epoch is printed, and no epoch starts that the mean epoch time says would end past the
budget), then the PixelCNN prior over the (h, w) code grid for ``--prior-minutes``: one epoch by
``fit_prior`` to time it, then further epochs on the same prior (fresh Adam state, best validation
epoch kept).  A smoke run: ``python -m benchmarks.mnist_vqvae --minutes 0.3 --prior-minutes 0.2``.

Data: ``--data PATH`` (``binarized_mnist.npz`` or its directory), else ``$PROBGEN_DATA``, else
``../shared/datasets`` next to the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.mnist_hvae import _threads
from benchmarks.mnist_vae import _data_path


def _budget_callback(start, budget, report):
    """A ``fit`` callback: print ``report(epoch, model, elapsed)``; stop before an epoch that would overrun."""
    def callback(epoch, model):
        elapsed = time.perf_counter() - start
        print(report(epoch, model, elapsed), flush=True)
        return elapsed + elapsed / epoch > budget
    return callback


def _mosaic(samples, originals, recons, rows=8):
    """(rows * 2 rows, ) images laid out for ``image_grid(nrow=rows)``: samples left, data/recon pairs right."""
    cols = samples.shape[0] // rows
    pairs = np.empty((rows, cols) + originals.shape[1:], originals.dtype)
    pairs[0::2], pairs[1::2] = originals.reshape((rows // 2, cols) + originals.shape[1:]), \
        recons.reshape((rows // 2, cols) + recons.shape[1:])
    return np.concatenate([samples.reshape((rows, cols) + samples.shape[1:]), pairs], axis=1).reshape(
        (-1,) + samples.shape[1:])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mnist_vqvae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="binarized_mnist.npz or its directory")
    p.add_argument("--minutes", type=float, default=8.0, help="VQ-VAE training budget (default 8)")
    p.add_argument("--prior-minutes", type=float, default=4.0, help="PixelCNN prior training budget (default 4)")
    p.add_argument("--hidden", type=int, nargs="+", default=[512])
    p.add_argument("--n-latents", type=int, default=16)
    p.add_argument("--code-dim", type=int, default=16)
    p.add_argument("--n-codes", type=int, default=256)
    p.add_argument("--beta", type=float, default=0.25, help="commitment weight (default 0.25)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--prior-channels", type=int, default=32)
    p.add_argument("--prior-layers", type=int, default=3)
    p.add_argument("--prior-batch-size", type=int, default=64)
    p.add_argument("--prior-lr", type=float, default=1e-3)
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, help="numba / BLAS threads (default: as set by the environment)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=None, help="score only the first N test images (smoke runs)")
    p.add_argument("--json", metavar="FILE", help="write settings, learning curves and results to FILE")
    p.add_argument("--samples", metavar="PNG", help="64 decoded prior samples (left) and 32 test images over "
                   "their reconstructions (right), Bernoulli means")
    args = p.parse_args(argv)

    threads = _threads(args.threads)
    from probgen.datasets import load_binarized_mnist
    from probgen.models import VQVAE
    from probgen.nn.losses import bernoulli_nll_forward

    data = load_binarized_mnist(_data_path(args.data))
    dtype = np.dtype(args.dtype)
    X, V, T = data.train.astype(dtype), data.valid.astype(dtype), data.test[: args.n_test].astype(dtype)
    vq = VQVAE(n_latents=args.n_latents, code_dim=args.code_dim, n_codes=args.n_codes, hidden=tuple(args.hidden),
               likelihood="bernoulli", beta=args.beta, codebook_update="ema", restart_dead=True, rng=args.seed,
               dtype=dtype)
    print(f"VQ-VAE hidden {vq.hidden}, L={vq.n_latents}, C={vq.code_dim}, K={vq.n_codes}, {args.dtype}, "
          f"threads {threads.get('numba')}; budget {args.minutes:g} + {args.prior_minutes:g} min", flush=True)

    def vq_line(epoch, m, elapsed):
        h = m.history_
        return (f"epoch {epoch:4d}  {elapsed:7.1f} s  train loss {h['train_loss'][-1]:8.3f}  validation loss "
                f"{h['validation_loss'][-1]:8.3f}  perplexity {h['train_perplexity'][-1]:6.1f}  restarts "
                f"{h['n_restarts'][-1]}")

    t0 = time.perf_counter()
    vq.fit(X, epochs=args.max_epochs, batch_size=args.batch_size, lr=args.lr, validation=V, progress=False,
           callback=_budget_callback(t0, 60.0 * args.minutes, vq_line))
    vq_seconds = time.perf_counter() - t0
    h = vq.history_
    vq_curve = [{"epoch": e, "train_loss": tr, "validation_loss": va, "train_perplexity": pp, "n_restarts": nr}
                for e, tr, va, pp, nr in zip(h["epoch"], h["train_loss"], h["validation_loss"], h["train_perplexity"],
                                             h["n_restarts"])]

    # the prior: one epoch by fit_prior (timed), then more epochs on the same PixelCNN within the budget
    t1 = time.perf_counter()
    vq.fit_prior(X, channels=args.prior_channels, n_layers=args.prior_layers, epochs=1,
                 batch_size=args.prior_batch_size, lr=args.prior_lr, validation=V, progress=False, rng=args.seed + 1)
    prior = vq.prior_
    first = prior.history_
    print(f"prior epoch    1  {time.perf_counter() - t1:7.1f} s  train NLL {first['train_nll'][0]:8.3f}  "
          f"validation NLL {first['validation_nll'][0]:8.3f}", flush=True)
    prior_curve = [{"epoch": 1, "train_nll": first["train_nll"][0], "validation_nll": first["validation_nll"][0]}]
    grid = prior.image_shape
    codes_X, codes_V = vq.encode(X).reshape((-1,) + grid), vq.encode(V).reshape((-1,) + grid)
    prior_budget = 60.0 * args.prior_minutes
    elapsed = time.perf_counter() - t1
    if elapsed * 2 <= prior_budget:
        def prior_line(epoch, m, elapsed):
            ph = m.history_
            prior_curve.append({"epoch": epoch + 1, "train_nll": ph["train_nll"][-1],
                                "validation_nll": ph["validation_nll"][-1]})
            return (f"prior epoch {epoch + 1:4d}  {elapsed:7.1f} s  train NLL {ph['train_nll'][-1]:8.3f}  "
                    f"validation NLL {ph['validation_nll'][-1]:8.3f}")

        def callback(epoch, m):  # the first epoch's time counts towards the budget and the mean
            now = time.perf_counter() - t1
            print(prior_line(epoch, m, now), flush=True)
            return now + now / (epoch + 1) > prior_budget

        prior.fit(codes_X, epochs=args.max_epochs, batch_size=args.prior_batch_size, lr=args.prior_lr,
                  validation=codes_V, keep_best=True, progress=False, callback=callback)
        best = prior.history_.get("best_epoch")
        prior_best = {"epoch": best + 1, "validation_nll": prior_curve[best]["validation_nll"]}
        if prior_best["validation_nll"] > prior_curve[0]["validation_nll"]:  # keep_best saw only epochs 2..
            prior_best = {"epoch": 1, "validation_nll": prior_curve[0]["validation_nll"]}
            print("note: epoch 1 had the best validation NLL, but the later fit keeps its own best", flush=True)
    else:
        prior_best = {"epoch": 1, "validation_nll": prior_curve[0]["validation_nll"]}
    prior_seconds = time.perf_counter() - t1

    t2 = time.perf_counter()
    codes_T = vq.encode(T)
    logits = vq.decode(codes_T)
    rec_nll = bernoulli_nll_forward(logits, T)[0].astype(np.float64)  # -log p(x | z*)
    pixel_error = float(np.mean((logits > 0) != (T > 0.5)))  # sigma(l) > 0.5 <=> l > 0
    log_prior = vq.code_log_prob(codes_T).astype(np.float64)
    bound = vq.log_likelihood_bound(T).astype(np.float64)
    used = int(np.unique(codes_T).size)
    results = {"n_test": int(T.shape[0]), "reconstruction_nll": float(rec_nll.mean()),
               "pixel_error": pixel_error, "test_perplexity": vq.perplexity(T),
               "validation_perplexity": vq.perplexity(V), "codes_used_on_test": used,
               "prior_nll": float(-log_prior.mean()), "uniform_prior_nll": vq.n_latents * float(np.log(vq.n_codes)),
               "nll_bound": float(-bound.mean()), "nll_bound_standard_error": float(bound.std() / np.sqrt(bound.size)),
               "eval_seconds": time.perf_counter() - t2}
    print(f"\nVQ-VAE: {len(vq_curve)} epochs in {vq_seconds:.0f} s; prior: {len(prior_curve)} epochs in "
          f"{prior_seconds:.0f} s (best validation epoch {prior_best['epoch']})")
    print(f"test ({results['n_test']} images): reconstruction NLL {results['reconstruction_nll']:.2f} nats, "
          f"pixel error {100 * pixel_error:.2f} %, code perplexity {results['test_perplexity']:.1f} of {vq.n_codes} "
          f"({used} codes used)")
    print(f"prior NLL of the codes {results['prior_nll']:.2f} nats (uniform: {results['uniform_prior_nll']:.2f}); "
          f"NLL bound -log p(z*) - log p(x|z*) = {results['nll_bound']:.2f} +- "
          f"{results['nll_bound_standard_error']:.2f} nats")
    if args.samples:
        from probgen.plotting import image_grid

        samples = vq.sample(64, rng=args.seed + 2, kind="mean")
        pick = np.linspace(0, T.shape[0] - 1, 32).astype(np.int64)  # spread out: the test set is sorted by digit
        recons = 1.0 / (1.0 + np.exp(-logits[pick].astype(np.float64)))
        image_grid(_mosaic(samples, T[pick], recons), nrow=8, image_shape=(28, 28),
                   title="prior samples | test images over reconstructions", path=args.samples)
        print(f"wrote {args.samples}")
    if args.json:
        record = {"command": " ".join(["python -m benchmarks.mnist_vqvae", *(argv if argv is not None else sys.argv[1:])]),
                  "args": vars(args), "threads": threads, "grid": list(grid),
                  "n_parameters": int(sum(a.size for a in vq.named_parameters().values())),
                  "prior_n_parameters": int(sum(a.size for a in prior.named_parameters().values())),
                  "vq_seconds": vq_seconds, "prior_seconds": prior_seconds, "vq_curve": vq_curve,
                  "prior_curve": prior_curve, "prior_best": prior_best, "results": results}
        Path(args.json).write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
