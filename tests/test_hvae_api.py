"""HierarchicalVAE beyond the maths: training, float32, checkpoints, persistence, encode / unit activity and
input checks (the gradients and estimators are in test_hvae.py)."""
import numpy as np
import pytest
from _hvae_fixtures import INFERENCES, D, _binary, _eps, _model, _np_top_down_q

from probgen._validation import NotFittedError
from probgen.models.hvae import HierarchicalVAE


# ----------------------------------------------------------------------------- training and the rest of the API
@pytest.mark.parametrize("inference", INFERENCES)
def test_training_lowers_the_loss_and_seeds_reproduce(inference):
    rng = np.random.default_rng(11)
    X = _binary(200, rng)
    make = lambda seed: HierarchicalVAE(latent_dims=(4, 2), hidden=(12,), rng=seed, inference=inference)
    a = make(3).build(D)
    eps = _eps(a, 200, rng)
    before = a.loss_and_grads(X, eps=eps)[0]
    a.fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    assert a.loss_and_grads(X, eps=eps)[0] < before - 1.0
    assert a.history_["train_elbo"][-1] > a.history_["train_elbo"][0]
    b = make(3).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    c = make(4).fit(X, epochs=15, batch_size=20, lr=3e-3, progress=False)
    for k, p in a.named_parameters().items():
        np.testing.assert_array_equal(p, b.named_parameters()[k])
    assert not np.array_equal(a.named_parameters()["p_x.out.W"], c.named_parameters()["p_x.out.W"])


@pytest.mark.parametrize("inference", INFERENCES)
def test_float32_training_keeps_the_dtype_and_the_api_shapes(inference):
    rng = np.random.default_rng(12)
    X = _binary(120, rng)
    m = HierarchicalVAE(latent_dims=(3, 2), hidden=((10,), (6,)), estimator="mc", n_samples=2, rng=0,
                        dtype=np.float32, inference=inference)
    m.fit(X, epochs=8, batch_size=20, lr=3e-3, validation=X[:40], kl_warmup=2, lr_decay=0.9, keep_best=True,
          progress=False)
    h = m.history_
    assert h["kl_weight"][0] < 1.0 and h["kl_weight"][-1] == 1.0 and "best_epoch" in h
    np.testing.assert_allclose(h["lr"], 3e-3 * 0.9 ** np.arange(8))
    assert all(p.dtype == np.float32 for p in m.named_parameters().values())
    assert all(g.dtype == np.float32 for g in m.loss_and_grads(X[:5])[1].values())
    (mu1, lv1), (mu2, lv2) = m.encode(X[:5])
    assert mu1.shape == lv1.shape == (5, 3) and mu2.shape == lv2.shape == (5, 2)
    outs = [mu1, lv1, mu2, lv2, m.decode(mu1), m.reconstruct(X[:5]), m.sample(4, rng=0),
            m.sample(4, rng=0, return_mean=True), m.elbo(X[:5], rng=0), m.log_likelihood(X[:5], k=10, rng=0),
            m.score_samples(X[:5], k=10, rng=0)]
    assert all(o.dtype == np.float32 for o in outs)
    assert m.sample(30, rng=1).shape == (30, D) and set(np.unique(m.sample(30, rng=1))) <= {0.0, 1.0}
    mean = m.sample(30, rng=2, return_mean=True)
    assert np.all((mean >= 0) & (mean <= 1))


def test_resumed_training_is_bit_identical(tmp_path):
    rng = np.random.default_rng(13)
    X, V = _binary(60, rng), _binary(20, rng)
    make = lambda: HierarchicalVAE(latent_dims=(3, 2), hidden=(6,), rng=5)
    fit = dict(batch_size=20, lr=3e-3, validation=V, kl_warmup=1, lr_decay=0.9, progress=False)
    ck = tmp_path / "ck.npz"
    make().fit(X, epochs=2, checkpoint=ck, **fit)
    resumed = make().fit(X, epochs=4, checkpoint=ck, resume=ck, **fit)
    straight = make().fit(X, epochs=4, **fit)
    for k, p in straight.named_parameters().items():
        np.testing.assert_array_equal(resumed.named_parameters()[k], p, err_msg=k)
    assert resumed.history_ == straight.history_
    with pytest.raises(ValueError, match="architecture"):
        HierarchicalVAE(latent_dims=(3, 3), hidden=(6,), rng=5).fit(X, epochs=4, resume=ck, **fit)
    # the inference model is part of the architecture: a bottom-up checkpoint does not resume a top-down model
    with pytest.raises(ValueError, match="architecture"):
        HierarchicalVAE(latent_dims=(3, 2), hidden=(6,), rng=5, inference="top_down").fit(X, epochs=4, resume=ck, **fit)


@pytest.mark.parametrize("inference", INFERENCES)
def test_save_load_round_trip(tmp_path, inference):
    rng = np.random.default_rng(14)
    X = _binary(40, rng)
    m = HierarchicalVAE(latent_dims=(3, 2), hidden=((6, 4), (5,)), estimator="mc", rng=0, dtype=np.float32,
                        inference=inference)
    m.fit(X, epochs=2, batch_size=10, progress=False)
    m.save(tmp_path / "h.npz")
    back = HierarchicalVAE.load(tmp_path / "h.npz")
    assert (back.latent_dims, back.hidden, back.estimator, back.dtype) == ((3, 2), ((6, 4), (5,)), "mc", np.float32)
    assert back.inference == inference and back._config() == m._config()
    assert back.history_ == m.history_
    for k, p in m.named_parameters().items():
        np.testing.assert_array_equal(back.named_parameters()[k], p)
    np.testing.assert_array_equal(back.log_likelihood(X, k=5, rng=0), m.log_likelihood(X, k=5, rng=0))
    (tmp_path / "bad.npz").write_bytes((tmp_path / "h.npz").read_bytes()[:300])
    with pytest.raises(ValueError, match="bad.npz"):
        HierarchicalVAE.load(tmp_path / "bad.npz")
    from probgen.models.vae import VAE

    VAE(latent_dim=2, hidden=(4,), rng=0).build(D).save(tmp_path / "vae.npz")
    with pytest.raises(ValueError, match="HierarchicalVAE"):
        HierarchicalVAE.load(tmp_path / "vae.npz")


def test_configs_from_before_top_down_inference_still_load_and_resume(tmp_path):
    from probgen.io import load_npz_json, save_npz_json

    m = _model(latent_dims=(3, 2), hidden=((6,), (4,)))
    old = {"latent_dims": [3, 2], "hidden": [[6], [4]], "estimator": "analytic", "n_samples": 1, "activation": "tanh",
           "dtype": "float64", "n_features": D}  # the configuration as written before `inference` existed
    assert m._config() == old  # so bottom-up checkpoints and files written before still match exactly
    save_npz_json(tmp_path / "old.npz", m.named_parameters(),
                  {"format": "probgen.HierarchicalVAE", "config": old, "history": None})
    back = HierarchicalVAE.load(tmp_path / "old.npz")
    assert back.inference == "bottom_up" and back.spec_.inference == "bottom_up"
    X = _binary(3, np.random.default_rng(0))
    np.testing.assert_array_equal(back.elbo(X, rng=1), m.elbo(X, rng=1))
    t = _model(latent_dims=(3, 2), hidden=((6,), (4,)), inference="top_down")
    t.save(tmp_path / "td.npz")
    assert load_npz_json(tmp_path / "td.npz")[1]["config"] == {**old, "inference": "top_down"}
    bad = {**old, "inference": "sideways"}
    save_npz_json(tmp_path / "bad.npz", m.named_parameters(), {"format": "probgen.HierarchicalVAE", "config": bad})
    with pytest.raises(ValueError, match="bad.npz.*inference"):
        HierarchicalVAE.load(tmp_path / "bad.npz")


def test_unit_activity_detects_a_collapsed_unit():
    m = _model(latent_dims=(4, 3))
    P = m.named_parameters()
    P["q_z1.mu.W"][:, 1] = 0.0  # mu1_1 no longer depends on x: an inactive unit
    P["q_z2.mu.W"][:, 2] = 0.0  # nor mu2_2 on z1
    X = _binary(300, np.random.default_rng(15))
    a1, a2 = m.unit_activity(X, n_samples=5, rng=0)
    assert a1.shape == (4,) and a2.shape == (3,)
    assert a1[1] < 1e-20 and a2[2] < 1e-20  # a constant up to rounding
    assert np.all(np.delete(a1, 1) > 0) and np.all(np.delete(a2, 2) > 0)
    mu1 = m.encode(X)[0][0]
    np.testing.assert_allclose(a1, mu1.var(axis=0), rtol=1e-12)  # E_q[z1|x] = mu1(x) exactly


def test_top_down_encode_and_unit_activity():
    m = _model(latent_dims=(4, 3), inference="top_down")
    P = m.named_parameters()
    X = _binary(300, np.random.default_rng(15))
    (mu1, lv1), (mu2, lv2) = m.encode(X)
    # q(z2|x) exactly, and q(z1|z2, x) at z2 = mu2 (the mean path: noise 0)
    ref_mu2, ref_s2, _, ref_mu1, ref_s1 = _np_top_down_q(P, X, np.zeros((1, 300, 3)), 2, 1, "tanh")
    np.testing.assert_allclose(mu2, ref_mu2, rtol=1e-12)
    np.testing.assert_allclose(lv2, 2 * np.log(ref_s2), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mu1, ref_mu1[0], rtol=1e-12)
    np.testing.assert_allclose(lv1, 2 * np.log(ref_s1[0]), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.reconstruct(X[:4]), m.decode(mu1[:4]), rtol=1e-15)
    P["q_z2.mu.W"][:, 2] = 0.0  # mu2_2 no longer depends on x
    P["q_z1.mu.W"][:, 1] = 0.0  # nor mu1_1 on (d, z2)
    a1, a2 = m.unit_activity(X, n_samples=5, rng=0)
    assert a1.shape == (4,) and a2.shape == (3,)
    assert a1[1] < 1e-20 and a2[2] < 1e-20
    assert np.all(np.delete(a1, 1) > 0) and np.all(np.delete(a2, 2) > 0)
    np.testing.assert_allclose(a2, m.encode(X)[1][0].var(axis=0), rtol=1e-12)  # E_q[z2|x] = mu2(x) exactly


def test_hidden_forms():
    assert HierarchicalVAE(hidden=(8, 4)).hidden == ((8, 4), (8, 4))  # one tuple: the same for both layers
    assert HierarchicalVAE(hidden=7).hidden == ((7,), (7,))
    assert HierarchicalVAE(hidden=((8,), 3)).hidden == ((8,), (3,))
    assert HierarchicalVAE(hidden=[(), [5]]).hidden == ((), (5,))
    m = HierarchicalVAE(latent_dims=[5, 2], hidden=((8, 4), (3,))).build(D)
    shapes = {k: v.shape for k, v in m.named_parameters().items()}
    assert shapes["q_z1.0.W"] == (D, 8) and shapes["q_z1.mu.W"] == (4, 5) and shapes["q_z2.0.W"] == (5, 3)
    assert shapes["q_z2.log_var.W"] == (3, 2) and shapes["p_z1.0.W"] == (2, 3) and shapes["p_z1.mu.W"] == (3, 5)
    assert shapes["p_x.0.W"] == (5, 4) and shapes["p_x.1.W"] == (4, 8) and shapes["p_x.out.W"] == (8, D)
    t = HierarchicalVAE(latent_dims=[5, 2], hidden=((8, 4), (3,)), inference="top_down").build(D)
    shapes = {k: v.shape for k, v in t.named_parameters().items()}  # d = q_d(x) has width 4; q_z1 reads [d, z2]
    assert shapes["q_d.0.W"] == (D, 8) and shapes["q_d.1.W"] == (8, 4) and "q_d.mu.W" not in shapes
    assert shapes["q_z2.0.W"] == (4, 3) and shapes["q_z2.mu.W"] == (3, 2) and shapes["q_z1.0.W"] == (4 + 2, 3)
    assert shapes["q_z1.log_var.W"] == (3, 5) and shapes["p_z1.mu.W"] == (3, 5) and shapes["p_x.out.W"] == (8, D)
    assert list(t.named_parameters())[0] == "q_d.0.W"
    lin = HierarchicalVAE(latent_dims=[5, 2], hidden=((), ()), inference="top_down").build(D)
    assert lin.named_parameters()["q_z1.mu.W"].shape == (D + 2, 5)  # no feature layers: d = x


def test_bad_input_is_refused_clearly():
    rng = np.random.default_rng(16)
    with pytest.raises(NotFittedError, match="fit"):
        HierarchicalVAE().encode(np.zeros((2, D)))
    m = _model()
    with pytest.raises(ValueError, match="binarize"):
        m.fit(rng.random((10, D)), epochs=1, progress=False)
    X = _binary(4, rng)
    with pytest.raises(ValueError, match="binary"):
        m.elbo(X * 0.5)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.loss_and_grads(Xn)
    with pytest.raises(ValueError, match="features"):
        m.log_likelihood(np.zeros((3, D + 1)))
    e1, e2 = _eps(m, 4, rng, squeeze=True)
    for bad, msg in [((e1[:, :3], e2), r"eps\[0\].*\(4, 4\)"), ((e1, e2[:3]), r"eps\[1\].*\(4, 3\)"),
                     ((e1, e2, e2), "pair"), (e1, "pair"), ((e1[None, None], e2), "eps")]:
        with pytest.raises((ValueError, TypeError), match=msg):
            m.loss_and_grads(X, eps=bad)
    with pytest.raises(ValueError, match="n_samples"):  # 2-D noise only when n_samples == 1
        _model(n_samples=2).loss_and_grads(X, eps=(e1, e2))
    for kwargs, exc, msg in [({"latent_dims": (0, 2)}, ValueError, "latent_dims"),
                             ({"latent_dims": 5}, ValueError, "latent_dims"),
                             ({"latent_dims": (3, 2, 1)}, ValueError, "latent_dims"),
                             ({"latent_dims": (3.5, 2)}, TypeError, "latent_dims"),
                             ({"hidden": ((4,), (3,), (2,))}, ValueError, "hidden"),
                             ({"hidden": ((4, 0), (3,))}, ValueError, "hidden"),
                             ({"hidden": "wide"}, TypeError, "hidden"),
                             ({"estimator": "iwae"}, ValueError, "estimator"),
                             ({"n_samples": 0}, ValueError, "n_samples"),
                             ({"activation": "gelu"}, ValueError, "activation"),
                             ({"dtype": np.int32}, TypeError, "dtype"),
                             ({"rng": "seed"}, TypeError, "rng"),
                             ({"inference": "ladder"}, ValueError, "inference.*bottom_up.*top_down.*ladder")]:
        with pytest.raises(exc, match=msg):
            HierarchicalVAE(**kwargs)
    with pytest.raises(ValueError, match="validation"):
        m.fit(_binary(10, rng), epochs=1, keep_best=True, progress=False)
    with pytest.raises(ValueError, match="k"):
        m.log_likelihood(X, k=0)
    with pytest.raises(ValueError, match="Z1"):
        m.decode(np.zeros((2, 5)))
