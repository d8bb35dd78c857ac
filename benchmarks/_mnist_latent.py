"""The end shared by ``mnist_vae.py`` and ``mnist_hvae.py``: test ELBO and importance-sampled log-likelihood,
the JSON record, the ELBO curve, the sample grid and the saved model."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def evaluate_and_report(model, T, args, argv, *, script, title, train_minutes, extra=None):
    """Score ``model`` on the test images ``T`` and write what ``args`` asks for (``--out``, ``--plot``,
    ``--samples``, ``--save``); ``extra`` goes into the JSON record.  Returns the exit status 0."""
    h = model.history_
    t1 = time.perf_counter()
    test_elbo = float(np.mean(model.elbo(T, rng=args.seed + 1), dtype=np.float64))
    ll = model.log_likelihood(T, k=args.k, rng=args.seed + 2)
    test_ll = float(np.mean(ll, dtype=np.float64))
    se = float(np.std(ll, dtype=np.float64) / np.sqrt(ll.size))
    eval_min = (time.perf_counter() - t1) / 60
    print(f"test ELBO {test_elbo:.2f} nats; test log-likelihood (k={args.k}) {test_ll:.2f} +- {se:.2f} nats "
          f"(NLL {-test_ll:.2f}) on {T.shape[0]} images; evaluation {eval_min:.1f} min", flush=True)
    result = {"command": f"python -m benchmarks.{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
              "args": vars(args), **(extra or {}), "train_minutes": train_minutes, "eval_minutes": eval_min,
              "epochs": len(h["epoch"]), "best_epoch": h.get("best_epoch"), "test_elbo": test_elbo,
              "test_log_likelihood": test_ll, "test_nll": -test_ll, "test_ll_standard_error": se,
              "n_test": int(T.shape[0]), "history": h}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    if args.plot:
        from probgen.plotting import curves

        curves({"train ELBO": h["train_elbo"], "validation ELBO": h["validation_elbo"]}, xlabel="epoch",
               ylabel="nats", title=title, path=args.plot)
        print(f"wrote {args.plot}")
    if args.samples:
        from probgen.plotting import image_grid

        image_grid(model.sample(100, rng=args.seed + 3, return_mean=True), nrow=10, image_shape=(28, 28),
                   title="samples (decoder means)", path=args.samples)
        print(f"wrote {args.samples}")
    if args.save:
        model.save(args.save)
        print(f"wrote {args.save}")
    return 0
