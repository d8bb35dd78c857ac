"""Numerical demonstrations for docs/errata.md: each erratum in the source notes
(/work/shared/seeds) is evaluated as written and as corrected; the notes' version
disagrees with an independent oracle, the corrected one agrees.

``PYTHONPATH=. python tests/test_errata.py`` (from the project root) prints the numbers
quoted in docs/errata.md.
"""
import numpy as np
import scipy.integrate
import scipy.optimize
import scipy.special
import scipy.stats

from probgen.distributions.discrete import log_softmax
from probgen.distributions.gaussian import fit_gaussian, gaussian_log_prob
from probgen.distributions.kl import kl_categorical, kl_gaussian, kl_monte_carlo

# a small 1-D Gaussian mixture shared by the EM/ELBO demonstrations
PI = np.array([0.4, 0.6])
MU = np.array([-1.0, 2.0])
VAR = np.array([1.0, 0.5])


def _log_joint(x, pi=PI, mu=MU, var=VAR):
    """log p(x, z=k) for every x (N,) and k: (N, K)."""
    x = np.asarray(x, float)[:, None]
    return np.log(pi) + scipy.stats.norm(mu, np.sqrt(var)).logpdf(x)


# ------------------------------------------------------------ 1. KL arguments swapped (000)

def demo_kl_swapped():
    mp, Sp = np.array([0.0, 0.0]), np.array([[1.0, 0.6], [0.6, 2.0]])
    mg, Sg = np.array([2.0, -1.0]), np.diag([0.3, 1.0])  # the notes take Sigma_g diagonal
    k, d, Pp = 2, mg - mp, np.linalg.inv(Sp)
    notes = 0.5 * (np.log(np.linalg.det(Sp) / np.linalg.det(Sg)) + np.trace(Pp @ Sg) + d @ Pp @ d - k)
    p, g = scipy.stats.multivariate_normal(mp, Sp), scipy.stats.multivariate_normal(mg, Sg)
    mc, se = kl_monte_carlo(p.logpdf, g.logpdf, lambda n, r: r.multivariate_normal(mp, Sp, size=n), 200_000, rng=0)
    return dict(notes=notes, correct=float(kl_gaussian(mp, Sp, mg, Sg)), mc=mc, se=se,
                reverse=float(kl_gaussian(mg, Sg, mp, Sp)))


def test_kl_arguments_swapped_in_000():
    r = demo_kl_swapped()
    assert abs(r["correct"] - r["mc"]) < 5 * r["se"]  # KL(p||g) closed form matches E_p[log p - log g]
    assert abs(r["notes"] - r["mc"]) > 50 * r["se"]  # the notes' formula does not
    np.testing.assert_allclose(r["notes"], r["reverse"], rtol=1e-12)  # ... it is KL(g||p)


# ------------------------------------------------------------ 2. E over p_theta, not p_data (000)

def demo_lln_expectation():
    data, model = scipy.stats.norm(0.0, 1.0), scipy.stats.norm(1.0, 2.0)
    x = data.rvs(size=200_000, random_state=np.random.default_rng(1))
    lp = model.logpdf(x)
    avg, se = lp.mean(), lp.std(ddof=1) / np.sqrt(x.size)
    correct = -0.5 * np.log(2 * np.pi * 4.0) - (1.0 + 1.0) / (2 * 4.0)  # E_pdata[log p_theta]
    quad = scipy.integrate.quad(lambda t: data.pdf(t) * model.logpdf(t), -40, 40)[0]
    notes = -model.entropy()  # E_{p_theta}[log p_theta]
    return dict(avg=avg, se=se, correct=correct, quad=quad, notes=float(notes))


def test_law_of_large_numbers_uses_p_data_in_000():
    r = demo_lln_expectation()
    np.testing.assert_allclose(r["correct"], r["quad"], rtol=1e-10)
    assert abs(r["avg"] - r["correct"]) < 5 * r["se"]
    assert abs(r["avg"] - r["notes"]) > 50 * r["se"]


# ------------------------------------------------------------ 3. -log|Sigma| for -1/2 log|Sigma| (002)

def _notes_logpdf(X, mean, cov):
    D = X.shape[1]
    R = X - mean
    maha = np.einsum("nd,de,ne->n", R, np.linalg.inv(cov), R)
    return -D / 2 * np.log(2 * np.pi) - np.log(np.linalg.det(cov)) - 0.5 * maha


def demo_half_log_det():
    mean, cov = np.zeros(2), np.array([[4.0, 1.0], [1.0, 2.0]])
    X = np.array([[0.5, -1.0], [2.0, 1.0], [-3.0, 0.2]])
    t = np.arange(-30.0, 30.0, 0.03)
    G = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)
    mass_notes = np.exp(_notes_logpdf(G, mean, cov)).sum() * 0.03**2
    mass_ours = np.exp(gaussian_log_prob(G, mean, cov)).sum() * 0.03**2
    # consequence for the MLE (1-D): the notes' log-likelihood peaks at half the variance
    x = np.random.default_rng(2).normal(3.0, 1.5, size=500)
    S = np.sum((x - x.mean()) ** 2)
    notes_ll = lambda v: -len(x) * np.log(v) - 0.5 * S / v  # noqa: E731
    right_ll = lambda v: -0.5 * len(x) * np.log(v) - 0.5 * S / v  # noqa: E731
    opt = dict(bounds=(1e-3, 10.0), method="bounded", options=dict(xatol=1e-10))
    v_notes = scipy.optimize.minimize_scalar(lambda v: -notes_ll(v), **opt).x
    v_right = scipy.optimize.minimize_scalar(lambda v: -right_ll(v), **opt).x
    return dict(notes=_notes_logpdf(X, mean, cov), ours=gaussian_log_prob(X, mean, cov),
                scipy=scipy.stats.multivariate_normal(mean, cov).logpdf(X), det=np.linalg.det(cov),
                mass_notes=mass_notes, mass_ours=mass_ours, v_notes=v_notes, v_right=v_right,
                v_mle=float(fit_gaussian(x[:, None])[1][0, 0]))


def test_half_log_determinant_in_002():
    r = demo_half_log_det()
    np.testing.assert_allclose(r["ours"], r["scipy"], rtol=1e-12)
    np.testing.assert_allclose(r["notes"] - r["scipy"], -0.5 * np.log(r["det"]), rtol=1e-12)
    np.testing.assert_allclose(r["mass_ours"], 1.0, rtol=1e-9)  # a density integrates to 1
    np.testing.assert_allclose(r["mass_notes"], r["det"] ** -0.5, rtol=1e-9)  # the notes' does not
    np.testing.assert_allclose(r["v_right"], r["v_mle"], rtol=1e-7)
    np.testing.assert_allclose(r["v_notes"], r["v_mle"] / 2, rtol=1e-7)


# ------------------------------------------------------------ 4. stray sum over n in the responsibility (002)

def demo_responsibility():
    from sklearn.mixture import GaussianMixture

    X = np.array([-2.0, -0.5, 0.3, 1.8, 2.5])
    r = np.exp(log_softmax(_log_joint(X), axis=1))  # Bayes' rule per point
    notes = np.tile(r.sum(axis=0), (X.size, 1))  # gamma_nk = sum_n (...) : the same row for every n
    gm = GaussianMixture(2, covariance_type="spherical")
    gm.weights_, gm.means_, gm.covariances_ = PI, MU[:, None], VAR
    gm.precisions_cholesky_ = 1 / np.sqrt(VAR)
    oracle = gm.predict_proba(X[:, None])
    return dict(ours=r, notes=notes, sklearn=oracle, pi_notes=notes.sum(0) / X.size, pi_ours=r.sum(0) / X.size)


def test_responsibility_has_no_sum_over_n_in_002():
    r = demo_responsibility()
    np.testing.assert_allclose(r["ours"], r["sklearn"], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(r["ours"].sum(axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(r["notes"].sum(axis=1), 5.0, rtol=1e-14)  # sums to N, not 1
    np.testing.assert_allclose(r["pi_notes"].sum(), 5.0, rtol=1e-14)  # mixing weights sum to N
    assert np.max(np.abs(r["notes"] - r["sklearn"])) > 1.0


# ------------------------------------------------------------ 5. ELBO without its log (002)

def demo_elbo_log():
    x = np.array([0.5])
    log_joint = _log_joint(x)[0]  # log p(x, z) for z = 1, 2
    log_px = scipy.special.logsumexp(log_joint)
    log_post = log_joint - log_px
    q = np.array([0.7, 0.3])
    elbo = np.sum(q * (log_joint - np.log(q)))
    kl = float(kl_categorical(np.log(q), log_post))
    notes = np.sum(q * np.exp(log_joint) / q)  # E_q[p(x, z) / q(z)]
    return dict(log_px=log_px, elbo=elbo, kl=kl, notes=notes, px=np.exp(log_px))


def test_elbo_needs_its_log_in_002():
    r = demo_elbo_log()
    np.testing.assert_allclose(r["elbo"] + r["kl"], r["log_px"], rtol=1e-14)  # log p = ELBO + KL
    assert r["elbo"] < r["log_px"] and r["kl"] > 0  # a strict lower bound for q != posterior
    np.testing.assert_allclose(r["notes"], r["px"], rtol=1e-14)  # E_q[p/q] is p(x) itself
    assert r["notes"] > r["log_px"]  # ... so it is no lower bound on log p(x)
    assert abs(r["notes"] + r["kl"] - r["log_px"]) > 1.0  # and the identity fails


# ------------------------------------------------------------ 6. Q without its log (002)

def demo_q_log():
    X = np.array([-3.0, 0.5, 2.0])
    r = np.exp(log_softmax(_log_joint(X), axis=1))  # posterior at theta_old
    Z = np.array(np.meshgrid(*[[0, 1]] * 3, indexing="ij")).reshape(3, -1).T  # all 8 assignments
    post = np.prod(r[np.arange(3), Z], axis=1)

    def log_pxz(mu0):
        lj = _log_joint(X, mu=np.array([mu0, MU[1]]))
        return lj[np.arange(3), Z].sum(axis=1)  # log p(X, Z | theta) for each Z

    q_right = lambda mu0: np.sum(post * log_pxz(mu0))  # noqa: E731
    q_notes = lambda mu0: np.sum(post * np.exp(log_pxz(mu0)))  # noqa: E731
    q_factor = np.sum(r * _log_joint(X))  # sum_n sum_k gamma_nk log(pi_k N(x_n | mu_k, s_k))
    opt = dict(bounds=(-6.0, 6.0), method="bounded", options=dict(xatol=1e-10))
    mu_right = scipy.optimize.minimize_scalar(lambda m: -q_right(m), **opt).x
    mu_notes = scipy.optimize.minimize_scalar(lambda m: -q_notes(m), **opt).x
    mu_mstep = np.sum(r[:, 0] * X) / np.sum(r[:, 0])  # the notes' own M-step formula
    return dict(q_enum=q_right(MU[0]), q_factor=q_factor, mu_right=mu_right, mu_notes=mu_notes, mu_mstep=mu_mstep)


def test_q_function_needs_its_log_in_002():
    r = demo_q_log()
    np.testing.assert_allclose(r["q_enum"], r["q_factor"], rtol=1e-13)
    np.testing.assert_allclose(r["mu_right"], r["mu_mstep"], rtol=1e-7)
    assert abs(r["mu_notes"] - r["mu_mstep"]) > 1.0


# ------------------------------------------------------------ 7. KL(q||p) with ln dropped on q (002)

def demo_kl_q_log():
    log_joint = _log_joint([0.5])[0]
    log_post = log_joint - scipy.special.logsumexp(log_joint)
    q = np.array([0.7, 0.3])
    notes = -np.sum(q * (log_post - q))
    return dict(notes=notes, correct=float(kl_categorical(np.log(q), log_post)),
                scipy=scipy.stats.entropy(q, np.exp(log_post)))


def test_kl_q_p_needs_log_q_in_002():
    r = demo_kl_q_log()
    np.testing.assert_allclose(r["correct"], r["scipy"], rtol=1e-12)
    assert abs(r["notes"] - r["scipy"]) > 0.1


# ------------------------------------------------------------ 8. normaliser in the reparameterisation proof (000)

def demo_reparam_normaliser():
    sigma = 3.0
    notes = scipy.integrate.quad(lambda z: np.exp(-z**2 / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma), -60, 60)[0]
    right = scipy.integrate.quad(lambda z: np.exp(-z**2 / (2 * sigma**2)) / np.sqrt(2 * np.pi * sigma**2), -60, 60)[0]
    return dict(notes=notes, right=right, sqrt_sigma=np.sqrt(sigma))


def test_reparameterisation_normaliser_in_000():
    r = demo_reparam_normaliser()
    np.testing.assert_allclose(r["right"], 1.0, rtol=1e-10)
    np.testing.assert_allclose(r["notes"], r["sqrt_sigma"], rtol=1e-10)


if __name__ == "__main__":  # print the numbers quoted in docs/errata.md
    np.set_printoptions(precision=6, suppress=True)
    for demo in (demo_kl_swapped, demo_lln_expectation, demo_half_log_det, demo_responsibility,
                 demo_elbo_log, demo_q_log, demo_kl_q_log, demo_reparam_normaliser):
        print(demo.__name__)
        for key, val in demo().items():
            print(f"  {key} = {val}")
