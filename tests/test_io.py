"""save/load (npz + JSON, atomic, no pickle) and bit-identical RNG resume."""
import json
import os
import zipfile

import numpy as np
import pytest

from probgen import io as pio
from probgen.io import load_npz_json, rng_state, save_npz_json, set_rng_state


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "encoder.fc1.W": rng.normal(size=(5, 3)),
        "encoder.fc1.b": rng.normal(size=3).astype(np.float32),
        "counts": np.arange(7, dtype=np.int64),
        "mask": np.array([True, False]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 4)),
        "names": np.array(["a", "bc"]),
    }


CONFIG = {"latent_dim": 2, "hidden": [400, 400], "likelihood": "bernoulli", "lr": 1e-3,
          "nested": {"ok": True, "none": None}, "np_int": np.int64(3), "np_float": np.float32(0.5)}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, compress):
    f = tmp_path / "model.npz"
    assert save_npz_json(f, _arrays(), CONFIG, compress=compress) == f
    arrays, config = load_npz_json(f)
    _assert_same(arrays, {k: np.asarray(v) for k, v in _arrays().items()})
    assert config == json.loads(json.dumps({**CONFIG, "np_int": 3, "np_float": 0.5}))
    # a plain NumPy reader sees ordinary arrays and never needs pickle
    with np.load(f, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["counts"], np.arange(7))
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temp file left


def test_permissions_match_a_plain_open(tmp_path):
    (tmp_path / "plain").write_bytes(b"")
    save_npz_json(tmp_path / "new.npz", {"a": np.ones(1)}, {})
    assert (tmp_path / "new.npz").stat().st_mode == (tmp_path / "plain").stat().st_mode
    os.chmod(tmp_path / "new.npz", 0o640)
    save_npz_json(tmp_path / "new.npz", {"a": np.ones(2)}, {})
    assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640


def test_overwrite_replaces_the_whole_file(tmp_path):
    f = tmp_path / "ckpt.npz"
    save_npz_json(f, {"a": np.ones(3), "b": np.zeros(2)}, {"epoch": 1})
    save_npz_json(f, {"a": np.full(4, 7.0)}, {"epoch": 2})
    arrays, config = load_npz_json(f)
    assert list(arrays) == ["a"] and config == {"epoch": 2}
    np.testing.assert_array_equal(arrays["a"], np.full(4, 7.0))


@pytest.mark.parametrize("where", ["replace", "fsync", "savez"])
def test_crash_mid_write_keeps_the_old_file(tmp_path, monkeypatch, where):
    f = tmp_path / "ckpt.npz"
    save_npz_json(f, {"w": np.arange(5.0)}, {"epoch": 1})
    before = f.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated crash")

    target = {"replace": (pio.os, "replace"), "fsync": (pio.os, "fsync"), "savez": (pio.np, "savez")}[where]
    monkeypatch.setattr(*target, boom)
    with pytest.raises(OSError, match="simulated crash"):
        save_npz_json(f, {"w": np.arange(100.0)}, {"epoch": 2})
    monkeypatch.undo()
    assert f.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
    arrays, config = load_npz_json(f)
    assert config == {"epoch": 1}


def test_keyboard_interrupt_mid_write_also_cleans_up(tmp_path, monkeypatch):
    f = tmp_path / "ckpt.npz"
    save_npz_json(f, {"w": np.arange(3.0)}, {})
    monkeypatch.setattr(pio.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_npz_json(f, {"w": np.arange(9.0)}, {})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
    np.testing.assert_array_equal(load_npz_json(f)[0]["w"], np.arange(3.0))


@pytest.mark.parametrize("compress", [False, True])
def test_every_truncation_is_refused(tmp_path, compress):
    f = tmp_path / "ckpt.npz"
    save_npz_json(f, {"w": np.arange(6.0), "b": np.ones(2, np.float32)}, {"epoch": 3}, compress=compress)
    good = f.read_bytes()
    bad = tmp_path / "bad.npz"
    for n in range(0, len(good), 7):
        bad.write_bytes(good[:n])
        with pytest.raises(ValueError, match="bad.npz"):
            load_npz_json(bad)


@pytest.mark.parametrize("compress", [False, True])
def test_every_single_byte_corruption_is_refused_or_harmless(tmp_path, compress):
    """Flip each byte in turn: the load either refuses with ValueError or returns exactly the saved data.

    (Some zip bytes carry no meaning for the contents, e.g. timestamps; the CRC-32 of every member
    and the header's list of arrays catch everything that does.)
    """
    f = tmp_path / "ckpt.npz"
    arrays = {"w": np.arange(6.0).reshape(2, 3), "b": np.array([1, 2], np.int32)}
    save_npz_json(f, arrays, {"epoch": 3, "name": "vae"}, compress=compress)
    good = f.read_bytes()
    bad = tmp_path / "bad.npz"
    refused = 0
    for i in range(len(good)):
        data = bytearray(good)
        data[i] ^= 0xFF
        bad.write_bytes(bytes(data))
        try:
            got, config = load_npz_json(bad)
        except ValueError as exc:
            assert "bad.npz" in str(exc)
            refused += 1
            continue
        _assert_same(got, arrays)
        assert config == {"epoch": 3, "name": "vae"}
    assert refused > len(good) // 2


def test_foreign_files_are_refused(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(3))
    with pytest.raises(ValueError, match="plain.npz.*not a probgen file"):
        load_npz_json(plain)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="arr.npy"):
        load_npz_json(npy)
    txt = tmp_path / "notes.npz"
    txt.write_text("{}")
    with pytest.raises(ValueError, match="notes.npz"):
        load_npz_json(txt)
    # a probgen file with an array added behind its back
    f = tmp_path / "model.npz"
    save_npz_json(f, {"w": np.ones(2)}, {})
    with zipfile.ZipFile(f, "a") as z:
        z.writestr("extra.npy", _npy_bytes(np.zeros(1)))
    with pytest.raises(ValueError, match="do not match"):
        load_npz_json(f)
    # a newer format version
    g = tmp_path / "future.npz"
    header = {"format": pio.FORMAT_NAME, "version": pio.FORMAT_VERSION + 1, "arrays": [], "config": {}}
    np.savez(g, **{pio.CONFIG_KEY: np.frombuffer(json.dumps(header).encode(), np.uint8)})
    with pytest.raises(ValueError, match="version"):
        load_npz_json(g)


def _npy_bytes(arr):
    import io as _io

    buf = _io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_object_arrays_and_bad_input_refused_on_save(tmp_path):
    f = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="'bad'.*pickl"):
        save_npz_json(f, {"bad": np.array([1, "a", None], dtype=object)}, {})
    with pytest.raises(TypeError, match="pickl"):
        save_npz_json(f, {"rec": np.zeros(2, dtype=[("a", "f8"), ("o", "O")])}, {})
    with pytest.raises(ValueError, match="__config__"):
        save_npz_json(f, {"__config__": np.ones(1)}, {})
    with pytest.raises(ValueError, match="slashes"):
        save_npz_json(f, {"a/b": np.ones(1)}, {})
    with pytest.raises(ValueError, match="NaN"):
        save_npz_json(f, {}, {"lr": float("nan")})
    with pytest.raises(TypeError, match="not JSON"):
        save_npz_json(f, {}, {"fn": print})
    with pytest.raises(TypeError, match="dict"):
        save_npz_json(f, [np.ones(1)], {})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        save_npz_json(tmp_path / "nowhere" / "x.npz", {}, {})
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz_json(tmp_path / "missing.npz")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- RNG state
BITGENS = [np.random.PCG64, np.random.PCG64DXSM, np.random.MT19937, np.random.Philox, np.random.SFC64]


@pytest.mark.parametrize("bitgen", BITGENS, ids=lambda b: b.__name__)
def test_rng_state_round_trip_reproduces_the_draws(tmp_path, bitgen):
    gen = np.random.Generator(bitgen(12345))
    gen.normal(size=3)
    gen.integers(0, 10, size=3, dtype=np.int32)  # leaves a buffered 32-bit half (has_uint32)
    state = rng_state(gen)
    text = json.dumps(state)

    def no_big_ints(s):
        assert abs(int(s)) < 2**53, "a JSON number that a double cannot hold"
        return int(s)

    restored = json.loads(text, parse_int=no_big_ints)
    save_npz_json(tmp_path / "c.npz", {}, {"rng": restored})
    restored = load_npz_json(tmp_path / "c.npz")[1]["rng"]

    expected = (gen.integers(0, 2**31, size=5, dtype=np.int32), gen.random(4), gen.standard_normal(3),
                gen.integers(0, 2**63, size=2))
    other = np.random.Generator(bitgen(999))
    assert set_rng_state(other, restored) is other
    got = (other.integers(0, 2**31, size=5, dtype=np.int32), other.random(4), other.standard_normal(3),
           other.integers(0, 2**63, size=2))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_set_rng_state_accepts_a_raw_state_and_rejects_mismatches():
    gen = np.random.default_rng(7)
    raw = gen.bit_generator.state
    a = gen.random(3)
    np.testing.assert_array_equal(set_rng_state(np.random.default_rng(0), raw).random(3), a)
    with pytest.raises(ValueError, match="MT19937.*PCG64"):
        set_rng_state(np.random.default_rng(0), rng_state(np.random.Generator(np.random.MT19937(0))))
    broken = rng_state(gen)
    broken["state"]["state"] = {"__int__": "not a number"}
    with pytest.raises(ValueError):
        set_rng_state(np.random.default_rng(0), broken)
    with pytest.raises(TypeError, match="Generator"):
        rng_state(np.random.RandomState(0))
    with pytest.raises(TypeError, match="dict"):
        set_rng_state(gen, "PCG64")
