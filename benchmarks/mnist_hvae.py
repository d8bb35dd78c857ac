"""Train the IWAE paper's two-stochastic-layer VAE (784-200-200-[100]-100-100-[50]) on statically binarised MNIST.

Keeps the parameters with the best validation ELBO and reports the test ELBO, the test log-likelihood
estimated with k = 5000 importance samples ``[eq:hvae-iwae]`` (nats; lower NLL is better) and the
active units of each stochastic layer.  The target is a test NLL <= 90 nats within ~45 minutes of
training on one core.

Defaults and why:

* architecture, tanh, batch 100, Adam at 1e-3: Burda et al.'s two-layer model;
* ``--kl-warmup 50`` epochs of linear KL annealing: with beta = 1 from the start, the top layer's
  units are pulled onto the prior before p(z1|z2) can use them (posterior collapse); annealing
  (Sonderby et al. 2016 used 200 epochs for their ladder VAE) lets the networks learn to use z first,
  at a cost of ~6% of a ~800-epoch budget;
* ``--lr-decay 0.995`` per epoch: about 700-900 epochs fit in 45 minutes (~3 s an epoch at one
  thread), so the rate falls to ~3e-5 by the end (the one-layer VAE's 0.99 is meant for ~330 epochs);
* the best validation epoch is kept: static binarisation overfits.

Usage (the data path defaults to ``$PROBGEN_DATA`` or ``../shared/datasets``)::

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.mnist_hvae --minutes 45 \\
        --checkpoint hvae_ck.npz --out mnist_hvae.json --plot mnist_hvae.png

``--minutes`` bounds the training only (no epoch starts that the last epoch's duration says would end
past it); the k = 5000 estimate over the 10000 test images decodes 5e7 codes and adds roughly 10-20
minutes.  A smoke run: ``python -m benchmarks.mnist_hvae --minutes 1 --k 50 --n-test 500``.
Interrupted runs continue with the same command plus ``--checkpoint FILE`` (it resumes when the file
exists).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.mnist_vae import _data_path

ROOT = Path(__file__).resolve().parents[1]


def _threads(n) -> dict:
    """Set numba and BLAS threads when asked; return what is in force (recorded in the JSON)."""
    import numba

    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    if n:
        numba.set_num_threads(n)
    info["numba"] = numba.get_num_threads()
    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        if n:
            threadpool_limits(n)
        info["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "architecture")}
                        for d in threadpool_info()]
    except ImportError:
        info["blas"] = "threadpoolctl missing"
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mnist_hvae", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="binarized_mnist.npz or its directory (default $PROBGEN_DATA or ../shared/datasets)")
    p.add_argument("--epochs", type=int, default=5000, help="upper bound on epochs (default 5000)")
    p.add_argument("--minutes", type=float, default=45.0, help="training time budget in minutes (default 45)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-decay", type=float, default=0.995, help="per-epoch learning-rate factor (default 0.995)")
    p.add_argument("--kl-warmup", type=float, default=50.0, help="epochs of linear KL annealing (default 50)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="Adam's L2 penalty (default 0)")
    p.add_argument("--estimator", choices=("analytic", "mc"), default="analytic")
    p.add_argument("--n-samples", type=int, default=1, help="samples L per example and step (default 1)")
    p.add_argument("--hidden1", type=int, nargs="*", default=[200, 200], help="widths of q(z1|x) and p(x|z1)")
    p.add_argument("--hidden2", type=int, nargs="*", default=[100, 100], help="widths of q(z2|z1) and p(z1|z2)")
    p.add_argument("--latent", type=int, nargs=2, default=[100, 50], metavar=("Z1", "Z2"))
    p.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, help="numba / BLAS threads (default: as the environment says)")
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
    from probgen.models.hvae import HierarchicalVAE

    threads = _threads(args.threads)
    data = load_binarized_mnist(_data_path(args.data))
    dtype = np.dtype(args.dtype)
    X, V = data.train.astype(dtype), data.valid.astype(dtype)
    T = data.test[: args.n_test].astype(dtype)
    model = HierarchicalVAE(latent_dims=tuple(args.latent), hidden=(tuple(args.hidden1), tuple(args.hidden2)),
                            estimator=args.estimator, n_samples=args.n_samples, activation=args.activation,
                            rng=args.seed, dtype=dtype)
    resume = args.checkpoint if args.checkpoint and Path(args.checkpoint).is_file() else None
    t0 = time.perf_counter()
    budget = 60.0 * args.minutes
    last = [t0]

    def callback(epoch, m):  # one line per epoch; stop before an epoch that would overrun the budget
        h, now = m.history_, time.perf_counter()
        took, last[0] = now - last[0], now
        print(f"epoch {epoch:4d}  {(now - t0) / 60:6.1f} min  train ELBO {h['train_elbo'][-1]:8.2f}  "
              f"validation ELBO {h['validation_elbo'][-1]:8.2f}  kl weight {h['kl_weight'][-1]:.2f}  "
              f"lr {h['lr'][-1]:.2e}  ({took:.1f} s)", flush=True)
        return now - t0 + took >= budget

    print(f"training {model.hidden} latent {model.latent_dims} on {X.shape[0]} images, {args.dtype}, budget "
          f"{args.minutes:g} min" + (f", resuming from {resume}" if resume else ""), flush=True)
    model.fit(X, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, validation=V, progress=False,
              checkpoint=args.checkpoint, resume=resume, kl_warmup=args.kl_warmup, lr_decay=args.lr_decay,
              weight_decay=args.weight_decay, keep_best=True, callback=callback)
    train_min = (time.perf_counter() - t0) / 60
    h = model.history_
    best = h.get("best_epoch")
    print(f"trained {len(h['epoch'])} epochs in {train_min:.1f} min; best validation ELBO "
          f"{max(h['validation_elbo']):.2f} at epoch {best}", flush=True)
    a1, a2 = model.unit_activity(T, rng=args.seed + 4)
    active = [int(np.sum(a1 > 1e-2)), int(np.sum(a2 > 1e-2))]
    print(f"active units (A_u > 0.01 on the test images): z1 {active[0]}/{a1.size}, z2 {active[1]}/{a2.size}")
    return evaluate_and_report(model, T, args, argv, script="mnist_hvae", title="two-stochastic-layer VAE, binarised MNIST",
                               train_minutes=train_min, extra={"threads": threads, "active_units": active})


if __name__ == "__main__":
    sys.exit(main())
