"""Train an MLP GAN on statically binarised MNIST within a time budget; compare its samples by MMD.

Reports the unbiased squared MMD ``[eq:mmd-unbiased]`` (Gaussian kernel, median bandwidth
``[eq:mmd-median]``) between ``--n-mmd`` GAN samples and as many test images, next to the same
statistic between as many training images and the same test images (the real-versus-real reference),
with permutation p-values ``[eq:mmd-permutation-p]``.  A GAN has no likelihood: this and the sample
grid are the evaluation.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.mnist_gan --threads 1 \\
        --json mnist_gan.json --samples mnist_gan_samples.png

The binary training images are the data, as floats; the generator's output layer is linear, so its
samples are real-valued (the grid shows them clipped to [0, 1]; the MMD uses them as they are).
``GAN.fit`` has no callback, so the budget is kept like this: one epoch is timed, then one more
``fit`` call runs the epochs that fit in the rest of ``--minutes`` (with fresh Adam state, as ``fit``
starts).  The per-epoch history (losses, mean D(x), mean D(G(z))) is printed and written.
A smoke run: ``python -m benchmarks.mnist_gan --minutes 0.3 --n-mmd 300 --permutations 20``.

Data: ``--data PATH`` (``binarized_mnist.npz`` or its directory), else ``$PROBGEN_DATA``, else
``../shared/datasets`` next to the repository.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.mnist_hvae import _threads
from benchmarks.mnist_vae import _data_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mnist_gan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="binarized_mnist.npz or its directory")
    p.add_argument("--minutes", type=float, default=8.0, help="training budget in minutes (default 8)")
    p.add_argument("--latent", type=int, default=64)
    p.add_argument("--g-hidden", type=int, nargs="+", default=[256, 512])
    p.add_argument("--d-hidden", type=int, nargs="+", default=[512, 256])
    p.add_argument("--loss", choices=("non_saturating", "minimax"), default="non_saturating")
    p.add_argument("--activation", choices=("relu", "leaky_relu", "tanh"), default="leaky_relu")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--betas", type=float, nargs=2, default=[0.5, 0.999])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, help="numba / BLAS threads (default: as set by the environment)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-mmd", type=int, default=2000, help="samples per side of each MMD (default 2000)")
    p.add_argument("--permutations", type=int, default=200, help="permutations per test (default 200)")
    p.add_argument("--json", metavar="FILE", help="write settings, history and results to FILE")
    p.add_argument("--samples", metavar="PNG", help="an 8x8 grid of samples clipped to [0, 1]")
    args = p.parse_args(argv)

    threads = _threads(args.threads)
    from probgen.datasets import load_binarized_mnist
    from probgen.metrics import mmd_permutation_test
    from probgen.models import GAN

    data = load_binarized_mnist(_data_path(args.data))
    dtype = np.dtype(args.dtype)
    X = data.train.astype(dtype)
    gan = GAN(latent_dim=args.latent, generator_hidden=tuple(args.g_hidden), discriminator_hidden=tuple(args.d_hidden),
              generator_loss=args.loss, activation=args.activation, rng=args.seed, dtype=dtype)
    fit_kw = {"batch_size": args.batch_size, "lr": args.lr, "betas": tuple(args.betas), "progress": False}
    print(f"GAN latent {args.latent}, G {tuple(args.g_hidden)}, D {tuple(args.d_hidden)}, {args.loss}, "
          f"{args.activation}, {args.dtype}, threads {threads.get('numba')}; budget {args.minutes:g} min", flush=True)
    t0 = time.perf_counter()
    gan.fit(X, epochs=1, **fit_kw)
    first = time.perf_counter() - t0
    history = {k: list(v) for k, v in gan.history_.items()}
    more = min(args.max_epochs - 1, math.floor((60.0 * args.minutes - first) / first))
    print(f"epoch 1 took {first:.1f} s; {more} more epochs fit the budget", flush=True)
    if more > 0:
        gan.fit(X, epochs=more, **fit_kw)
        for k, v in gan.history_.items():
            history[k].extend([e + 1 for e in v] if k == "epoch" else v)
    train_seconds = time.perf_counter() - t0
    print(f"{'epoch':>6} {'d_loss':>8} {'g_loss':>8} {'D(x)':>7} {'D(G(z))':>8}")
    for e, dl, gl, dr, df in zip(*(history[k] for k in ("epoch", "d_loss", "g_loss", "d_real", "d_fake"))):
        print(f"{e:>6} {dl:>8.4f} {gl:>8.4f} {dr:>7.4f} {df:>8.4f}")

    t1 = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    n = args.n_mmd
    test = data.test[rng.choice(data.test.shape[0], n, replace=False)].astype(np.float64)
    train = data.train[rng.choice(data.train.shape[0], n, replace=False)].astype(np.float64)
    fake = gan.sample(n, rng=args.seed + 2).astype(np.float64)
    mmd_gan, p_gan = mmd_permutation_test(fake, test, n_permutations=args.permutations, rng=args.seed + 3)
    mmd_ref, p_ref = mmd_permutation_test(train, test, n_permutations=args.permutations, rng=args.seed + 4)
    results = {"n_mmd": n, "permutations": args.permutations, "mmd2_gan_vs_test": mmd_gan, "p_gan_vs_test": p_gan,
               "mmd2_train_vs_test": mmd_ref, "p_train_vs_test": p_ref,
               "sample_range": [float(fake.min()), float(fake.max())],
               "sample_fraction_in_0_1": float(np.mean((fake >= 0) & (fake <= 1))),
               "sample_mean_pixel": float(fake.mean()), "test_mean_pixel": float(test.mean()),
               "eval_seconds": time.perf_counter() - t1}
    print(f"\nGAN: {len(history['epoch'])} epochs in {train_seconds:.0f} s")
    print(f"MMD^2 (unbiased, median bandwidth), {n} vs {n}: GAN samples vs test {mmd_gan:.5f} (p = {p_gan:.3f}); "
          f"train vs test {mmd_ref:.5f} (p = {p_ref:.3f}); {args.permutations} permutations, "
          f"{results['eval_seconds']:.0f} s")
    print(f"samples in [{results['sample_range'][0]:.2f}, {results['sample_range'][1]:.2f}], mean pixel "
          f"{results['sample_mean_pixel']:.4f} (test {results['test_mean_pixel']:.4f})")
    if args.samples:
        from probgen.plotting import image_grid

        image_grid(np.clip(gan.sample(64, rng=args.seed + 5), 0.0, 1.0), nrow=8, image_shape=(28, 28),
                   title="GAN samples (clipped to [0, 1])", path=args.samples)
        print(f"wrote {args.samples}")
    if args.json:
        record = {"command": " ".join(["python -m benchmarks.mnist_gan", *(argv if argv is not None else sys.argv[1:])]),
                  "args": vars(args), "threads": threads,
                  "n_parameters": int(sum(a.size for a in gan.named_parameters().values())),
                  "train_seconds": train_seconds, "first_epoch_seconds": first, "history": history,
                  "results": results}
        Path(args.json).write_text(json.dumps(record, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
