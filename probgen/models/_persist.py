"""Saving and loading a neural model: one ``.npz`` with a JSON header (atomic, no pickle).

Every model stores its parameters under their dotted names, its constructor
configuration (``model._config()``, which includes ``dtype`` and the data width),
its training history and any extra metadata.  Loading rebuilds the model from the
configuration through the class's ``_from_config`` and refuses, with a
``ValueError`` naming the file, anything that does not fit that architecture.
"""
from __future__ import annotations

import numpy as np

from ..io import load_npz_json, save_npz_json


def _format(cls) -> str:
    return f"probgen.{cls.__name__}"


def save_model(model, path, **extra):
    """Write ``model``'s parameters, configuration, history and ``extra`` metadata to ``path``."""
    meta = {"format": _format(type(model)), "config": model._config(), "history": model.history_, **extra}
    save_npz_json(path, model.named_parameters(), meta)


def load_model(cls, path):
    """Rebuild a ``cls`` saved by :func:`save_model`; returns ``(model, metadata)``."""
    arrays, meta = load_npz_json(path)
    if meta.get("format") != _format(cls):
        raise ValueError(f"{path} is not a saved {cls.__name__} (format {meta.get('format')!r})")
    cfg = dict(meta.get("config") or {})
    try:
        model = cls._from_config(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid {cls.__name__} configuration {meta.get('config')!r}: {exc}") from None
    own = model.named_parameters()
    if set(arrays) != set(own):
        raise ValueError(f"{path}: parameters {sorted(arrays)} do not match the architecture {sorted(own)}")
    for name, a in arrays.items():  # check everything before writing anything
        p = own[name]
        if a.shape != p.shape or a.dtype != p.dtype or not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: parameter {name!r} has shape {a.shape}, dtype {a.dtype} (expected "
                             f"{p.shape}, {p.dtype}) or non-finite values")
    for name, a in arrays.items():
        np.copyto(own[name], a)
    model.history_ = meta.get("history")
    return model, meta


class Persistent:
    """``save`` / ``load`` for a model whose ``_config``, ``_from_config`` and ``named_parameters`` round-trip."""

    def save(self, path):
        """Write the parameters, configuration and training history to ``path`` (one ``.npz``, atomic, no pickle)."""
        check_built = getattr(self, "_check_built", None)
        if check_built is not None:
            check_built()
        save_model(self, path)

    @classmethod
    def load(cls, path):
        """A model read back from :meth:`save` (``ValueError`` on a corrupt or foreign file)."""
        return load_model(cls, path)[0]
