"""The benchmark harness: equal threads, alternating A/B runs, medians, ratios, JSON records."""
from __future__ import annotations

import gc
import importlib
import os
import pkgutil
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Case:
    """One side-by-side comparison.

    ``setup(quick)`` builds the inputs and returns ``(probgen_fn, peer_fn)``: two
    zero-argument callables doing the same work.  It runs once, outside the timing.
    """

    name: str
    shape: str
    dtype: str
    peer: str
    setup: Callable[[bool], tuple[Callable[[], object], Callable[[], object]]]
    repeats: int = 15
    quick_repeats: int = 5


def set_threads(n: int) -> dict:
    """Set numba, BLAS (threadpoolctl) and torch to ``n`` threads; return what was set."""
    info = {"requested": n}
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    info["numba"] = numba.get_num_threads()
    info["numba_threading_layer"] = os.environ.get("NUMBA_THREADING_LAYER", "default")
    try:
        # scipy ships its own OpenBLAS (probgen.nn calls scipy.linalg.blas for the weight-gradient GEMMs);
        # threadpoolctl limits only the libraries already loaded, so load it first
        import scipy.linalg.blas  # noqa: F401
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(n)
        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for d in threadpool_info()
        ]
    except ImportError:
        info["blas"] = "threadpoolctl missing"
    try:
        import torch

        torch.set_num_threads(n)
        info["torch"] = torch.get_num_threads()
        info["torch_version"] = torch.__version__
    except ImportError:
        info["torch"] = None
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["machine"] = platform.processor() or platform.machine()
    return info


def _time_once(fn) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(case: Case, *, quick: bool, threads: int) -> dict:
    probgen_fn, peer_fn = case.setup(quick)
    # warm-up: JIT compilation, caches, allocator
    probgen_fn()
    peer_fn()
    repeats = case.quick_repeats if quick else case.repeats
    a, b = [], []
    for r in range(repeats):
        # alternate the order so drift and cache effects hit both sides equally
        if r % 2 == 0:
            a.append(_time_once(probgen_fn))
            b.append(_time_once(peer_fn))
        else:
            b.append(_time_once(peer_fn))
            a.append(_time_once(probgen_fn))
    pa, pb = statistics.median(a), statistics.median(b)
    return {
        "name": case.name,
        "shape": case.shape,
        "dtype": case.dtype,
        "threads": threads,
        "probgen_s": pa,
        "peer": case.peer,
        "peer_s": pb,
        "ratio": pa / pb,
        "repeats": repeats,
    }


def discover() -> list[Case]:
    import benchmarks

    cases = []
    for mod in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if mod.name.startswith("case_"):
            module = importlib.import_module(f"benchmarks.{mod.name}")
            cases.extend(module.CASES)
    return cases
