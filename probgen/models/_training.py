"""The training loop shared by the neural models: minibatch Adam, history, checkpoint and resume.

A model plugs in through a few private hooks:

* ``model._params`` — ``{name: live ndarray}``, updated in place by the optimiser;
* ``model._rng`` — the ``numpy.random.Generator`` that shuffles and draws noise;
* ``model._batch_step(Xb, rng, beta) -> (score, grads)`` — one minibatch: its
  score (mean ELBO, or mean loss) and gradients of the (possibly KL-weighted) loss;
* ``model._evaluate(X, rng) -> float`` — the score of a whole data set;
* ``model._config() -> dict`` — the architecture, JSON-safe, compared on resume;
* ``model._score_name`` (``"elbo"`` / ``"loss"``) and ``model._higher_is_better``.

A checkpoint is one ``.npz`` written atomically by :func:`probgen.io.save_npz_json`
after every epoch: the parameters, Adam's moments and step count, the generator's
state, the history and (with ``keep_best``) the best parameters so far.  Resuming
restores all of it, so an interrupted-then-resumed run ends bit-identical to an
uninterrupted one.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._progress import progress_bar
from .._validation import check_array, check_nonnegative_float, check_positive_float, check_positive_int
from ..io import load_npz_json, rng_state, save_npz_json, set_rng_state
from ..nn.optim import Adam

CHECKPOINT_KIND = "probgen-training-checkpoint"
LR_SCHEDULES = ("exponential", "cosine")


def check_fit_args(epochs, batch_size, lr, kl_warmup, lr_decay, weight_decay=0.0):
    epochs = check_positive_int(epochs, "epochs", minimum=0)
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive_float(lr, "lr")
    kl_warmup = check_nonnegative_float(kl_warmup, "kl_warmup")
    lr_decay = check_positive_float(lr_decay, "lr_decay")
    if lr_decay > 1:
        raise ValueError(f"lr_decay must be in (0, 1] (a per-epoch factor), got {lr_decay}")
    weight_decay = check_nonnegative_float(weight_decay, "weight_decay")
    return epochs, batch_size, lr, kl_warmup, lr_decay, weight_decay


def check_schedule(lr_schedule, lr_warmup, lr_decay):
    """Validate ``lr_schedule`` / ``lr_warmup`` (a cosine schedule takes no ``lr_decay``)."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if lr_schedule == "cosine" and lr_decay != 1.0:
        raise ValueError(f"lr_decay={lr_decay} applies to lr_schedule='exponential' only; "
                         "the cosine schedule decays to zero by itself")
    return lr_schedule, check_positive_int(lr_warmup, "lr_warmup", minimum=0)


def scheduled_lr(lr, step, *, schedule="exponential", lr_decay=1.0, epoch=0, total_steps=1, warmup=0):
    """Adam's learning rate for (0-based) ``step`` ``[eq:lr-schedule]``.

    ``"exponential"``: ``lr * lr_decay**epoch``; ``"cosine"``: ``lr * (1 + cos(pi step / total_steps)) / 2``,
    from ``lr`` at the first step towards 0 after ``total_steps`` steps.  A linear warm-up over the
    first ``warmup`` steps multiplies either by ``min(1, (step + 1) / warmup)``.
    """
    if schedule == "cosine":
        rate = 0.5 * lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    else:
        rate = lr * lr_decay ** epoch
    return rate * min(1.0, (step + 1) / warmup) if warmup else rate


def fit_flat(model, X, *, validation, desc, epochs, batch_size, lr, kl_warmup=None, lr_decay=1.0, weight_decay=0.0,
             lr_schedule="exponential", lr_warmup=0, **loop):
    """``fit`` of a model of (N, D) data (autoencoder, VAE, hierarchical VAE): check the arguments, build the
    model from X's width on first use, check X and ``validation`` with ``model._check_X``, then :func:`train`.

    ``kl_warmup=None``: the model has no KL term.  ``loop`` holds the remaining arguments of :func:`train`.
    """
    epochs, batch_size, lr, kl, lr_decay, weight_decay = check_fit_args(
        epochs, batch_size, lr, 0 if kl_warmup is None else kl_warmup, lr_decay, weight_decay)
    check_schedule(lr_schedule, lr_warmup, lr_decay)
    if model._params is None:
        model.build(check_array(X, "X", dtype=model.dtype).shape[1])
    X = model._check_X(X)
    if validation is not None:
        validation = model._check_X(validation, "validation")
    return train(model, X, epochs=epochs, batch_size=batch_size, lr=lr, validation=validation,
                 kl_warmup=None if kl_warmup is None else kl, lr_decay=lr_decay, weight_decay=weight_decay,
                 lr_schedule=lr_schedule, lr_warmup=lr_warmup, desc=desc, **loop)


def _save_checkpoint(path, model, opt, epochs_done, history, best, fit_settings):
    arrays = {f"param.{k}": v for k, v in model._params.items()}
    state = opt.state_dict()
    arrays.update({f"adam.{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
    adam_scalars = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    if best is not None:
        arrays.update({f"best.{k}": v for k, v in best["params"].items()})
    config = {
        "kind": CHECKPOINT_KIND,
        "model": type(model).__name__,
        "architecture": model._config(),
        "epochs_done": int(epochs_done),
        "adam": adam_scalars,
        "rng": rng_state(model._rng),
        "history": history,
        "fit": fit_settings,
        "best": None if best is None else {"epoch": best["epoch"], "score": best["score"]},
    }
    save_npz_json(path, arrays, config)


def _load_checkpoint(path, model, opt, fit_settings):
    """Read and check everything first, then restore (nothing changes if any check fails)."""
    try:
        arrays, config = load_npz_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"resume: no checkpoint at {path}") from None
    except ValueError as exc:
        raise ValueError(f"resume: cannot use checkpoint {path}: {exc}") from None

    def bad(msg):
        return ValueError(f"resume: checkpoint {path} {msg}")

    if config.get("kind") != CHECKPOINT_KIND:
        raise bad("is not a probgen training checkpoint")
    if config.get("model") != type(model).__name__:
        raise bad(f"belongs to a {config.get('model')}, not a {type(model).__name__}")
    if config.get("architecture") != model._config():
        raise bad(f"has architecture {config.get('architecture')}, but this model is {model._config()}")
    if config.get("fit") != fit_settings:
        raise bad(f"was written by fit settings {config.get('fit')}; resume needs the same settings, "
                  f"got {fit_settings}")
    params = {k[len("param."):]: v for k, v in arrays.items() if k.startswith("param.")}
    if set(params) != set(model._params):
        raise bad(f"holds parameters {sorted(params)}, expected {sorted(model._params)}")
    for k, v in params.items():
        if v.shape != model._params[k].shape or v.dtype != model._params[k].dtype:
            raise bad(f"parameter {k!r} has shape {v.shape} dtype {v.dtype}, expected "
                      f"{model._params[k].shape} {model._params[k].dtype}")
    state = dict(config.get("adam") or {})
    state.update({k[len("adam."):]: v for k, v in arrays.items() if k.startswith("adam.")})
    best = None
    if config.get("best") is not None:
        best = dict(config["best"], params={k[len("best."):]: v for k, v in arrays.items()
                                            if k.startswith("best.")})
        if set(best["params"]) != set(model._params):
            raise bad("holds an incomplete set of best parameters")
    probe = np.random.Generator(type(model._rng.bit_generator)())
    try:
        set_rng_state(probe, config.get("rng"))
        scratch = Adam({k: np.zeros_like(v) for k, v in model._params.items()})
        scratch.load_state_dict(state)
    except (TypeError, ValueError) as exc:
        raise bad(f"has an unusable optimiser or RNG state: {exc}") from None
    epochs_done = config.get("epochs_done")
    if not isinstance(epochs_done, int) or epochs_done < 0:
        raise bad(f"has an invalid epoch count {epochs_done!r}")
    for k, v in params.items():
        np.copyto(model._params[k], v)
    opt.load_state_dict(state)
    set_rng_state(model._rng, config["rng"])
    return epochs_done, config.get("history"), best


def _new_history(model, validation, kl):
    name = model._score_name
    h = {"epoch": [], f"train_{name}": [], "lr": []}
    if validation is not None:
        h[f"validation_{name}"] = []
    if kl:
        h["kl_weight"] = []
    return h


def train(model, X, *, epochs, batch_size, lr, validation=None, progress=True, checkpoint=None,
          resume=None, kl_warmup=None, lr_decay=1.0, weight_decay=0.0, keep_best=False, callback=None,
          desc="train", lr_schedule="exponential", lr_warmup=0):
    """Run minibatch Adam on valid ``X`` (N, D); sets ``model.history_`` and returns ``model``.

    See :meth:`probgen.models.VAE.fit` for the arguments.  ``kl_warmup=None`` means
    the model has no KL term (no ``kl_weight`` in the history).
    """
    X = np.ascontiguousarray(X)  # minibatch rows gathered from a column-major X cost a pass over all of X
    N = X.shape[0]
    rng = model._rng
    lr_schedule, lr_warmup = check_schedule(lr_schedule, lr_warmup, lr_decay)
    steps_per_epoch = math.ceil(N / batch_size)
    warm_steps = 0 if not kl_warmup else kl_warmup * steps_per_epoch
    fit_settings = {"batch_size": batch_size, "n_train": int(N), "lr": lr, "lr_decay": lr_decay,
                    "weight_decay": weight_decay, "kl_warmup": kl_warmup, "keep_best": bool(keep_best),
                    "validation": None if validation is None else int(validation.shape[0])}
    if lr_schedule != "exponential" or lr_warmup:  # (absent otherwise: older checkpoints stay resumable)
        fit_settings.update(lr_schedule=lr_schedule, lr_warmup=lr_warmup)
    if lr_schedule == "cosine":  # the horizon is part of the schedule: a resumed run must keep it
        fit_settings["epochs"] = epochs
    schedule = {"schedule": lr_schedule, "lr_decay": lr_decay, "total_steps": max(1, epochs * steps_per_epoch),
                "warmup": lr_warmup}
    if keep_best and validation is None:
        raise ValueError("keep_best=True needs validation data (validation=X_valid)")
    if checkpoint is not None and not Path(checkpoint).parent.is_dir():
        raise FileNotFoundError(f"checkpoint directory does not exist: {Path(checkpoint).parent}")
    opt = Adam(model._params, lr=lr, weight_decay=weight_decay)
    history, best, start = _new_history(model, validation, kl_warmup is not None), None, 0
    if resume is not None:
        start, saved_history, best = _load_checkpoint(resume, model, opt, fit_settings)
        if saved_history is not None:
            history = saved_history
    model.history_ = history  # live during training (a callback may read it)
    sign = 1.0 if model._higher_is_better else -1.0
    name = model._score_name
    buf = np.empty((min(batch_size, N), X.shape[1]), X.dtype)
    bar = progress_bar(total=epochs, desc=desc, enabled=progress, unit="epoch")
    bar.update(min(start, epochs))
    try:
        for epoch in range(start, epochs):
            perm = rng.permutation(N)
            total, beta = 0.0, 1.0
            for s in range(0, N, batch_size):
                idx = perm[s:s + batch_size]
                Xb = np.take(X, idx, axis=0, out=buf[:len(idx)])
                if warm_steps:
                    beta = min(1.0, (opt.n_steps + 1) / warm_steps)  # linear KL warm-up
                opt.lr = scheduled_lr(lr, opt.n_steps, epoch=epoch, **schedule)
                score, grads = model._batch_step(Xb, rng, beta)
                if not np.isfinite(score):
                    raise FloatingPointError(
                        f"training diverged: the minibatch {name} is {score} in epoch {epoch + 1}; "
                        f"lower lr (now {opt.lr:g}) or check the data")
                opt.step(grads)
                total += score * len(idx)
            history["epoch"].append(epoch + 1)
            history[f"train_{name}"].append(total / N)
            history["lr"].append(opt.lr)
            if "kl_weight" in history:
                history["kl_weight"].append(beta)
            if validation is not None:
                v = float(model._evaluate(validation, rng))
                history[f"validation_{name}"].append(v)
                if keep_best and (best is None or sign * v > sign * best["score"]):
                    best = {"epoch": epoch + 1, "score": v,
                            "params": {k: p.copy() for k, p in model._params.items()}}
            if checkpoint is not None:
                _save_checkpoint(checkpoint, model, opt, epoch + 1, history, best, fit_settings)
            bar.update(1)
            bar.set_postfix({name: f"{history[f'train_{name}'][-1]:.3f}"})
            if callback is not None and callback(epoch + 1, model):
                break
    finally:
        bar.close()
    if keep_best and best is not None:
        for k, p in model._params.items():
            np.copyto(p, best["params"][k])
        history["best_epoch"] = best["epoch"]
    return model
