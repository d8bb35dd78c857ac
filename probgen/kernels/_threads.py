"""Threads for the kernels: NumPy's BLAS thread count, one-BLAS-thread blocks, and image/row ranges run
on a reused pool of threads of our own.

Used by the masked convolution, the PixelCNN network and the codebook search: with several BLAS threads
they split their images (rows) into one contiguous range per thread and run each range serially, BLAS
held at one thread (every compiled kernel releases the GIL, and so does BLAS).  GEMMs as small as theirs
gain little from BLAS's own threads, which also synchronise once per call.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

__all__ = []  # private module


_BLAS = []  # threadpoolctl's controllers of the loaded BLAS libraries, found once


def blas_threads() -> int:
    """Threads of NumPy's BLAS right now (a few microseconds; follows ``threadpool_limits``).

    Chunked loops choose their chunk size by it: one BLAS thread does best with cache-sized
    chunks, several do best with few large GEMMs (each call synchronises them).  NumPy's
    library is the one under ``numpy`` (wheels); otherwise every loaded BLAS counts.
    """
    return max((c.num_threads for c in _blas_controllers()), default=1)


def _blas_controllers():
    """threadpoolctl's controllers of NumPy's BLAS (every loaded BLAS if none is NumPy's), found once."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
        own = [c for c in libs if "numpy" in str(c.filepath).lower()]
        _BLAS.append(own or libs)
    return _BLAS[0]


_POOLS: dict = {}


def thread_pool(threads):
    """A ``ThreadPoolExecutor`` of this size, made once and reused (starting threads per call costs ~0.1 ms)."""
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="probgen")
    return pool


_ONE_THREAD = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextmanager
def one_blas_thread():
    """Run the block with NumPy's BLAS at one thread, then restore its thread count.

    For callers that split work over threads of their own (each thread's GEMMs then run serially,
    with no BLAS pool synchronising or spinning), as scikit-learn's KMeans does.  The setting is
    process-wide while the block runs; overlapping blocks (from several threads) share one saved
    count, restored when the last of them ends.
    """
    controllers = _blas_controllers()
    state = _ONE_THREAD
    with state["lock"]:
        if state["depth"] == 0:
            state["saved"] = [c.num_threads for c in controllers]
            for c in controllers:
                c.set_num_threads(1)
        state["depth"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["depth"] -= 1
            if state["depth"] == 0:
                for c, n in zip(controllers, state["saved"]):
                    c.set_num_threads(n)


def split_ranges(N, workers):
    """Contiguous ranges ``[(lo, hi)]`` of N items (images, rows), one per worker."""
    bounds = np.linspace(0, N, workers + 1).astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def run_ranges(job, ranges):
    """``job(lo, hi, worker)`` for every range: inline for one, else on threads of our own with BLAS at one
    thread each (the compiled kernels release the GIL, and so does BLAS)."""
    if len(ranges) == 1:
        job(*ranges[0], 0)
        return
    with one_blas_thread():
        futures = [thread_pool(len(ranges)).submit(job, lo, hi, i) for i, (lo, hi) in enumerate(ranges)]
        for f in futures:
            f.result()
