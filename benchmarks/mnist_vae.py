"""Train the IWAE paper's one-stochastic-layer VAE (784-500-500-50) on statically binarised MNIST.

Keeps the parameters with the best validation ELBO and reports the test ELBO and the test
log-likelihood estimated with k = 5000 importance samples ``[eq:iwae]``, in nats (lower NLL is
better).  The target is a test NLL <= 90 nats within one hour of CPU training; a torch model of
the same architecture trained plainly (tanh, Adam 1e-3, batch 100, best validation epoch) reaches
90.96 on this machine: it peaks after ~45 epochs and then overfits the static binarisation, so the
defaults here add KL warm-up, a decaying learning rate and the best-validation checkpoint.

Usage (the full run; the data path defaults to ``$PROBGEN_DATA`` or ``../shared/datasets``)::

    python -m benchmarks.mnist_vae --minutes 60 --out mnist_vae.json --plot mnist_vae.png

``--minutes`` bounds the training only; the k = 5000 estimate over the 10000 test images decodes
5e7 codes and adds roughly 7-18 minutes on 2 cores.  A smoke run:
``python -m benchmarks.mnist_vae --minutes 1 --k 50 --n-test 500``.
Interrupted runs continue with the same command plus ``--checkpoint FILE`` (it resumes when the
file exists).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _data_path(arg):
    if arg:
        return arg
    if os.environ.get("PROBGEN_DATA"):
        return os.environ["PROBGEN_DATA"]
    return str(ROOT.parent / "shared" / "datasets")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mnist_vae", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="binarized_mnist.npz or its directory (default $PROBGEN_DATA or ../shared/datasets)")
    p.add_argument("--epochs", type=int, default=2000, help="upper bound on epochs (default 2000)")
    p.add_argument("--minutes", type=float, default=60.0, help="training time budget in minutes (default 60)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.99, help="per-epoch learning-rate factor (default 0.99)")
    p.add_argument("--kl-warmup", type=float, default=20.0, help="epochs of linear KL annealing (default 20)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam's L2 penalty (default 0)")
    p.add_argument("--n-samples", type=int, default=1, help="samples L per example and step (default 1)")
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--latent", type=int, default=50)
    p.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=5000, help="importance samples for the test log-likelihood")
    p.add_argument("--n-test", type=int, default=None, help="score only the first N test images (smoke runs)")
    p.add_argument("--checkpoint", help="checkpoint file: written every epoch, resumed from if it exists")
    p.add_argument("--out", help="write the results and the curve as JSON")
    p.add_argument("--plot", help="write the ELBO curve as PNG")
    p.add_argument("--samples", help="write a 10x10 grid of decoder means of prior samples as PNG")
    p.add_argument("--save", help="save the final (best-validation) model as .npz")
    args = p.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from benchmarks._mnist_latent import evaluate_and_report
    from probgen.datasets import load_binarized_mnist
    from probgen.models import VAE

    data = load_binarized_mnist(_data_path(args.data))
    dtype = np.dtype(args.dtype)
    X, V = data.train.astype(dtype), data.valid.astype(dtype)
    T = data.test[: args.n_test].astype(dtype)
    vae = VAE(latent_dim=args.latent, hidden=tuple(args.hidden), likelihood="bernoulli", estimator="analytic",
              n_samples=args.n_samples, activation=args.activation, rng=args.seed, dtype=dtype)
    resume = args.checkpoint if args.checkpoint and Path(args.checkpoint).is_file() else None
    t0 = time.perf_counter()
    budget = 60.0 * args.minutes

    def callback(epoch, model):  # one line per epoch; stop once the time budget is spent
        h, elapsed = model.history_, time.perf_counter() - t0
        print(f"epoch {epoch:4d}  {elapsed / 60:6.1f} min  train ELBO {h['train_elbo'][-1]:8.2f}  "
              f"validation ELBO {h['validation_elbo'][-1]:8.2f}  kl weight {h['kl_weight'][-1]:.2f}  "
              f"lr {h['lr'][-1]:.2e}", flush=True)
        return elapsed >= budget

    print(f"training {vae.hidden} latent {vae.latent_dim} on {X.shape[0]} images, {args.dtype}, budget "
          f"{args.minutes:g} min" + (f", resuming from {resume}" if resume else ""), flush=True)
    vae.fit(X, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, validation=V, progress=False,
            checkpoint=args.checkpoint, resume=resume, kl_warmup=args.kl_warmup, lr_decay=args.lr_decay,
            weight_decay=args.weight_decay, keep_best=True, callback=callback)
    train_min = (time.perf_counter() - t0) / 60
    h = vae.history_
    best = h.get("best_epoch")
    print(f"trained {len(h['epoch'])} epochs in {train_min:.1f} min; best validation ELBO "
          f"{max(h['validation_elbo']):.2f} at epoch {best}", flush=True)
    return evaluate_and_report(vae, T, args, argv, script="mnist_vae", title="784-500-500-50 VAE, binarised MNIST",
                               train_minutes=train_min)


if __name__ == "__main__":
    sys.exit(main())
