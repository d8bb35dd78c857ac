"""Checkpoints: kill-and-resume is bit-identical; corrupt or interrupted writes never cost the last good one."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from probgen.io import load_npz_json
from probgen.models.ae import Autoencoder
from probgen.models.vae import VAE

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import numpy as np
from probgen.models.vae import VAE
rng = np.random.default_rng(0)
X = (rng.random((90, 10)) < 0.3).astype(np.float64)
V = (rng.random((30, 10)) < 0.3).astype(np.float64)
def make():
    return VAE(latent_dim=2, hidden=(8,), estimator="mc", n_samples=2, rng=5)
FIT = dict(epochs=6, batch_size=20, lr=3e-3, validation=V, kl_warmup=2, lr_decay=0.9, keep_best=True,
           progress=False)
"""

CHILD = SETUP + """
import os, signal, sys
def die(epoch, model):
    if epoch == 3:  # the checkpoint of epoch 3 is on disk: kill the process outright, no cleanup
        os.kill(os.getpid(), signal.SIGKILL)
make().fit(X, checkpoint=sys.argv[1], callback=die, **FIT)
"""


def _ns():
    ns = {}
    exec(SETUP, ns)
    return ns


def test_killed_then_resumed_run_is_bit_identical(tmp_path):
    ck = tmp_path / "run.npz"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ck)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    _, config = load_npz_json(ck)
    assert config["epochs_done"] == 3
    ns = _ns()
    resumed = ns["make"]().fit(ns["X"], checkpoint=ck, resume=ck, **ns["FIT"])
    straight = ns["make"]().fit(ns["X"], **ns["FIT"])
    for k, p in straight.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[k], p, err_msg=k)
    assert resumed.history_ == straight.history_
    assert len(straight.history_["epoch"]) == 6 and "best_epoch" in straight.history_
    # the checkpoint of the finished run resumes to the same place with nothing left to do
    again = ns["make"]().fit(ns["X"], resume=ck, **ns["FIT"])
    assert again.history_ == straight.history_


def test_keep_best_restores_the_best_validation_epoch():
    ns = _ns()
    snaps = {}

    def snap(epoch, model):
        snaps[epoch] = {k: p.copy() for k, p in model.named_parameters().items()}

    fit = dict(ns["FIT"], lr=3e-2)
    vae = ns["make"]().fit(ns["X"], callback=snap, **fit)
    best = int(np.argmax(vae.history_["validation_elbo"])) + 1
    assert vae.history_["best_epoch"] == best
    for k, p in vae.named_parameters().items():
        np.testing.assert_array_equal(p, snaps[best][k])


def test_corrupt_or_mismatched_checkpoints_are_refused(tmp_path):
    ns = _ns()
    ck = tmp_path / "run.npz"
    fit = dict(ns["FIT"], epochs=2)
    ns["make"]().fit(ns["X"], checkpoint=ck, **fit)
    good = ck.read_bytes()
    model = ns["make"]().build(10)
    before = {k: p.copy() for k, p in model.named_parameters().items()}
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        model.fit(ns["X"], resume=bad, **fit)
    flipped = bytearray(good)
    flipped[len(good) // 3] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="checkpoint"):
        model.fit(ns["X"], resume=bad, **fit)
    for k, p in model.named_parameters().items():  # a refused resume changes nothing
        np.testing.assert_array_equal(p, before[k])
    with pytest.raises(ValueError, match="same settings"):
        ns["make"]().fit(ns["X"], resume=ck, **dict(fit, batch_size=10))
    with pytest.raises(ValueError, match="architecture"):
        VAE(latent_dim=3, hidden=(8,), estimator="mc", n_samples=2, rng=5).fit(ns["X"], resume=ck, **fit)
    ae = tmp_path / "ae.npz"
    Autoencoder(2, (4,), rng=0).fit(ns["X"], epochs=1, checkpoint=ae, progress=False)
    with pytest.raises(ValueError, match="Autoencoder"):
        ns["make"]().fit(ns["X"], resume=ae, **fit)
    with pytest.raises(FileNotFoundError):
        ns["make"]().fit(ns["X"], resume=tmp_path / "missing.npz", **fit)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ns = _ns()
    ck = tmp_path / "run.npz"
    ns["make"]().fit(ns["X"], checkpoint=ck, **dict(ns["FIT"], epochs=2))
    good = ck.read_bytes()

    def crash(fh, **arrays):  # half a file, then the "power cut"
        fh.write(b"PK\x03\x04" + b"\x00" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        ns["make"]().fit(ns["X"], checkpoint=ck, resume=ck, **ns["FIT"])
    monkeypatch.undo()
    assert ck.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]  # no temporary left behind
    resumed = ns["make"]().fit(ns["X"], checkpoint=ck, resume=ck, **ns["FIT"])
    straight = ns["make"]().fit(ns["X"], **ns["FIT"])
    np.testing.assert_array_equal(resumed.named_parameters()["decoder.out.W"],
                                  straight.named_parameters()["decoder.out.W"])
