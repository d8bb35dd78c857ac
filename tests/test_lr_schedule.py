"""Learning-rate schedules of the shared training loop ``[eq:lr-schedule]``: the formula, the rate each
Adam step really uses (against torch's own schedulers), resumption, and bad arguments."""
import math

import numpy as np
import pytest
from _require import require_torch

from probgen.models._training import scheduled_lr
from probgen.models.nade import NADE
from probgen.models.pixelcnn import PixelCNN
from probgen.models.vae import VAE
from probgen.nn.optim import Adam


def _data(N, D, seed):
    return (np.random.default_rng(seed).random((N, D)) < 0.4).astype(np.float64)


def _rates_used(monkeypatch, fit):
    """The learning rate in force at every Adam step of ``fit()``."""
    rates, step = [], Adam.step

    def recording_step(self, grads):
        rates.append(self.lr)
        return step(self, grads)

    monkeypatch.setattr(Adam, "step", recording_step)
    fit()
    return np.array(rates)


def test_formula_facts():
    T = 40
    cos = [scheduled_lr(2.0, s, schedule="cosine", total_steps=T) for s in range(T + 1)]
    assert cos[0] == 2.0 and cos[T] == 0.0
    assert cos[T // 2] == pytest.approx(1.0, abs=1e-15)  # half way: half the rate
    assert all(a > b for a, b in zip(cos, cos[1:]))
    for s in range(T):  # symmetric about the midpoint: eta_s + eta_{T-s} = eta
        assert cos[s] + cos[T - s] == pytest.approx(2.0, abs=1e-14)
    assert scheduled_lr(2.0, 99, schedule="exponential", lr_decay=0.5, epoch=3) == 0.25
    warm = [scheduled_lr(1.0, s, schedule="exponential", warmup=4) for s in range(6)]
    assert warm == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_steps_use_torch_cosine_annealing(monkeypatch):
    torch = require_torch()
    X = _data(50, 6, seed=1)
    epochs, batch = 3, 8
    rates = _rates_used(monkeypatch, lambda: NADE(n_hidden=4, rng=0).fit(
        X, epochs=epochs, batch_size=batch, lr=0.01, lr_schedule="cosine", progress=False))
    total = epochs * math.ceil(50 / batch)
    assert rates.shape == (total,)
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=0.0)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-17)


def test_warmup_then_exponential_matches_torch(monkeypatch):
    torch = require_torch()
    X = _data(40, 5, seed=2)
    rates = _rates_used(monkeypatch, lambda: NADE(n_hidden=3, rng=0).fit(
        X, epochs=3, batch_size=10, lr=0.02, lr_decay=0.5, lr_warmup=6, progress=False))
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.02)
    warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 6) * 0.5 ** (s // 4))
    expected = []
    for _ in range(12):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        warm.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-12)


def test_default_schedule_is_unchanged(monkeypatch):
    X = _data(30, 5, seed=3)
    rates = _rates_used(monkeypatch, lambda: NADE(n_hidden=3, rng=0).fit(
        X, epochs=3, batch_size=10, lr=0.02, lr_decay=0.8, progress=False))
    np.testing.assert_array_equal(rates, [0.02 * 0.8 ** e for e in range(3) for _ in range(3)])  # lr * lr_decay**epoch


def test_cosine_resume_is_bit_identical(tmp_path):
    X = (np.random.default_rng(4).random((24, 4, 4)) < 0.5).astype(np.uint8)
    kw = dict(epochs=4, batch_size=8, lr=0.01, lr_schedule="cosine", lr_warmup=2, progress=False)
    make = lambda: PixelCNN((4, 4), channels=4, n_layers=1, rng=3)  # noqa: E731
    ck = tmp_path / "ck.npz"
    make().fit(X, checkpoint=ck, callback=lambda epoch, m: epoch == 2, **kw)  # stopped after epoch 2
    resumed = make().fit(X, checkpoint=ck, resume=ck, **kw)
    straight = make().fit(X, **kw)
    for k, p in straight.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[k], p, err_msg=k)
    assert resumed.history_ == straight.history_
    assert straight.history_["lr"][-1] < straight.history_["lr"][0]
    with pytest.raises(ValueError, match="same settings"):  # a different horizon is a different schedule
        make().fit(X, resume=ck, **dict(kw, epochs=5))


def test_bad_arguments_are_refused_before_anything_is_built():
    X = _data(20, 4, seed=5)
    for kwargs, match in [({"lr_schedule": "linear"}, "lr_schedule must be one of"),
                          ({"lr_schedule": "cosine", "lr_decay": 0.9}, "lr_decay=0.9"),
                          ({"lr_warmup": -1}, "lr_warmup")]:
        for make in (lambda: NADE(n_hidden=2, rng=0), lambda: VAE(latent_dim=2, hidden=(4,), rng=0)):
            model = make()
            with pytest.raises(ValueError, match=match):
                model.fit(X, epochs=1, progress=False, **kwargs)
            assert model._params is None
    with pytest.raises(TypeError, match="lr_warmup"):
        NADE(n_hidden=2, rng=0).fit(X, epochs=1, lr_warmup=2.5, progress=False)


def test_checkpoint_settings_name_the_schedule_only_when_it_is_not_the_default(tmp_path):
    from probgen.io import load_npz_json

    X = _data(20, 4, seed=6)
    kw = dict(epochs=2, batch_size=10, progress=False)
    NADE(n_hidden=2, rng=0).fit(X, checkpoint=tmp_path / "plain.npz", **kw)
    assert "lr_schedule" not in load_npz_json(tmp_path / "plain.npz")[1]["fit"]  # as written before schedules
    NADE(n_hidden=2, rng=0).fit(X, checkpoint=tmp_path / "warm.npz", lr_warmup=3, **kw)
    settings = load_npz_json(tmp_path / "warm.npz")[1]["fit"]
    assert settings["lr_schedule"] == "exponential" and settings["lr_warmup"] == 3 and "epochs" not in settings
    with pytest.raises(ValueError, match="same settings"):
        NADE(n_hidden=2, rng=0).fit(X, resume=tmp_path / "warm.npz", lr_warmup=4, **kw)


def test_memory_order_of_X_changes_nothing():
    """A column-major training set (as ``np.load`` gives for a file written from a transposed array) is
    gathered from a row-major copy: the same minibatches, the same parameters, bit for bit."""
    X = _data(40, 12, 3)
    fits = [NADE(n_hidden=5, rng=0).fit(A, epochs=2, batch_size=7, lr=1e-2, progress=False)
            for A in (X, np.asfortranarray(X))]
    for (name, a), (_, b) in zip(fits[0].named_parameters().items(), fits[1].named_parameters().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
