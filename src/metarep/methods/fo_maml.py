"""First-order MAML (MATH 3, 'FO-MAML'), and its exact infinite-task gradient for one inner step.

Population form (this extends MATH 4 from FO-ANIL to FO-MAML). Write theta = B w,
v = theta - B* w* (Gaussian through w*: mean mu = B w - B* mu*, covariance C = B* Sigma* B*^T,
V = E[v v^T] = mu mu^T + C), and g = S v - X^T z / m (the inner prediction gradient; u = 1/m_in).
One inner step on both layers gives

    B_1 = B - alpha g w^T,  w_1 = w - alpha B^T g,
    theta_1 - B* w* = v - alpha R g + alpha^2 (theta . g) g,   R = B B^T + |w|^2 I.

The outer set is independent with E[S'] = I, so E[g' | inner] = theta_1 - B* w* and

    grad_B = E[(theta_1 - B* w*) w_1^T]
           = mu w^T - alpha V B - alpha R mu w^T + alpha^2 R A B + alpha^2 A theta w^T - alpha^3 K B
    grad_w = E[B_1^T (theta_1 - B* w*)]
           = B^T (mu - alpha R mu + alpha^2 A theta) - alpha tr(V) w + alpha^2 tr(R A) w - alpha^3 tr(K) w

with E[g] = mu, E[g v^T] = V, A = E[g g^T] = (1 + u) V + (tr V + sigma^2) u I (as in MATH 4) and
the third moment K = E[(theta . g) g g^T]. Unlike FO-ANIL, the cubic term needs the third
moments of g, hence of v: the formula assumes Gaussian features and Gaussian heads w*.

Third moment. Given v, g is the mean of m i.i.d. vectors x r with r = x . v - z, whose moments are
E[x r] = v, E[(x r)(x r)^T] = 2 v v^T + (|v|^2 + sigma^2) I, and (Isserlis, six Gaussian factors)
E[(x r)^{(x)3}] = 6 v^{(x)3} + 3 (|v|^2 + sigma^2) sym(v (x) I). Collecting the m, m(m-1),
m(m-1)(m-2) row coincidences,

    E[(theta . g) g g^T | v] = (1 + u)(1 + 2u) H + u (1 + 2u) J,
    H = (theta . v) v v^T,  J = (|v|^2 + sigma^2) ((theta . v) I + theta v^T + v theta^T),

and over Gaussian v: E[H] = (theta . mu) V + mu (C theta)^T + (C theta) mu^T,
E[J] = (theta . n) I + theta n^T + n theta^T, with n3 = E[|v|^2 v] = tr(V) mu + 2 C mu and
n = n3 + sigma^2 mu.

The expected outer loss is (E||theta_1 - B* w*||^2 + sigma^2) / 2, with

    E||theta_1 - B* w*||^2 = tr V - 2 alpha tr(R V) + alpha^2 tr(R^2 A)
        + 2 alpha^2 ((1 + u) theta . n3 + u theta . n) - 2 alpha^3 tr(R K) + alpha^4 Q4,

and the fourth moment Q4 = E[(theta . g)^2 |g|^2], from the 15 row coincidence patterns and
E[|x|^2 p(x)] = (d + deg p) E[p(x)] for homogeneous p (Stein), is with V2 = |v|^2, c = theta . v:

    E[Q4 | v] = (1 + 2u)(1 + (d + 5)u) (u |theta|^2 V2^2 + (1 + 3u) c^2 V2)
              + u (1 + 2u) sigma^2 (|theta|^2 (1 + (2d + 7)u) V2 + (d + 4)(1 + 3u) c^2)
              + u^2 (1 + 2u)(d + 2) sigma^4 |theta|^2,

averaged with the Gaussian moments E[V2 c^2] = tr(V) E[c^2] + 2 |Sigma* B*^T theta|^2
+ 4 (mu^T C theta)(theta . mu), E[V2^2] = tr(V)^2 + 2 tr(Sigma*^2) + 4 mu^T C mu.

Everything is applied to (d, n) blocks without forming a d x d matrix: O(d k'^2 + d k k') a step.
All arrays may carry leading batch axes: B (..., d, k'), w (..., k'), alpha and m_in (...).
"""

from __future__ import annotations

import numpy as np

from metarep.linear import one_step
from metarep.linear.params import Params
from metarep.linear.population import inverse_m
from metarep.methods.base import Method
from metarep.methods.inner import meta_gradient


def fo_maml_gradient(params: Params, tasks, *, alpha: float, inner_steps: int = 1) -> tuple[Params, float]:
    """FO-MAML outer gradient over N tasks: inner steps on both layers
    (B_i <- B_i - alpha g_i w_i^T, w_i <- w_i - alpha B_i^T g_i), then the outer gradient at the
    adapted point taken as the gradient at (B, w): grad_B = mean g'_i w_i^T, grad_w = mean B_i^T g'_i.
    Returns (Params(grad_B, grad_w), mean outer loss)."""
    B, w = params
    if one_step.applies(B, inner_steps):
        return _one_step_prediction_space(B, w, tasks, alpha)
    return meta_gradient(params, tasks, alpha=alpha, inner_steps=inner_steps, adapt_B=True, exact=False)


def _one_step_prediction_space(B, w, tasks, alpha):
    """The same gradient for one inner step, from task sums (`one_step.one_step_sums`): with
    R = B B^T + |w|^2 I, theta_i = theta - alpha R g_i + alpha^2 (theta . g_i) g_i, and with
    C = mean g'_i g_i^T, grad_B = mean g'_i w_i^T = (mean g'_i) w^T - alpha C B and
    grad_w = mean B_i^T g'_i = B^T mean g'_i - alpha tr(C) w. Cheaper when k' > 2d/3."""
    R = B @ B.T
    R[np.diag_indices_from(R)] += w @ w
    sums = one_step.one_step_sums(tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out, B @ w, -alpha * R, q=alpha**2)
    grad_B = np.outer(sums.g_out, w) - alpha * (sums.cross @ B)
    grad_w = B.T @ sums.g_out - (alpha * np.trace(sums.cross)) * w
    return Params(grad_B, grad_w), sums.loss


def _t(a):
    return np.swapaxes(a, -1, -2)


def _col(v):
    return v[..., :, None]


def _dot(a, b):
    return np.einsum("...i,...i->...", a, b)


def fo_maml_population_moments(B, w, problem, *, m_in):
    """The pieces of the derivation as operators on (..., d, n) blocks (also used by the tests):
    a dict with theta, mu, u = 1/m_in, tr_V, n3, n, apply_V, apply_A, apply_K (V, A, K applied to
    a block), tr_K, the Gaussian moments E[c^2], E[V2 c^2], E[V2^2], and Q4."""
    Bs, Sig, s2 = problem.B_star, problem.Sigma_star, problem.noise_std**2
    d = B.shape[-2]
    u = inverse_m(m_in)[..., None, None]
    theta = np.einsum("...dk,...k->...d", B, w)
    mu = theta - Bs @ problem.mu_star
    tr_Sig = np.trace(Sig)
    tr_V = _dot(mu, mu) + tr_Sig

    def apply_C(M):
        return Bs @ (Sig @ (Bs.T @ M))

    C_mu, C_th = apply_C(_col(mu))[..., 0], apply_C(_col(theta))[..., 0]
    n3 = tr_V[..., None] * mu + 2 * C_mu
    n = n3 + s2 * mu

    def apply_V(M):
        return _col(mu) * (_col(mu) * M).sum(axis=-2, keepdims=True) + apply_C(M)

    def apply_A(M):
        return (1 + u) * apply_V(M) + (tr_V[..., None, None] + s2) * u * M

    k1, k2 = (1 + u) * (1 + 2 * u), u * (1 + 2 * u)
    th_mu, th_n = _dot(theta, mu)[..., None, None], _dot(theta, n)[..., None, None]

    def outer_apply(a, b, M):
        """a (b^T M)."""
        return _col(a) * (_col(b) * M).sum(axis=-2, keepdims=True)

    def apply_K(M):
        EH = th_mu * apply_V(M) + outer_apply(mu, C_th, M) + outer_apply(C_th, mu, M)
        EJ = th_n * M + outer_apply(theta, n, M) + outer_apply(n, theta, M)
        return k1 * EH + k2 * EJ

    uu = u[..., 0, 0]
    tr_K = (1 + uu) * (1 + 2 * uu) * _dot(theta, n3) + uu * (1 + 2 * uu) * (d + 2) * _dot(theta, n)
    Bs_th = np.einsum("dk,...d->...k", Bs, theta)
    Bs_mu = np.einsum("dk,...d->...k", Bs, mu)
    E_c2 = np.einsum("...i,ij,...j->...", Bs_th, Sig, Bs_th) + _dot(theta, mu) ** 2
    Sig_Bs_th = np.einsum("ij,...j->...i", Sig, Bs_th)
    mu_C_th = np.einsum("...i,ij,...j->...", Bs_mu, Sig, Bs_th)
    mu_C_mu = np.einsum("...i,ij,...j->...", Bs_mu, Sig, Bs_mu)
    E_V2c2 = tr_V * E_c2 + 2 * _dot(Sig_Bs_th, Sig_Bs_th) + 4 * mu_C_th * _dot(theta, mu)
    E_V2sq = tr_V**2 + 2 * np.sum(Sig * Sig) + 4 * mu_C_mu
    T2 = _dot(theta, theta)
    Q4 = ((1 + 2 * uu) * (1 + (d + 5) * uu) * (uu * T2 * E_V2sq + (1 + 3 * uu) * E_V2c2)
          + uu * (1 + 2 * uu) * s2 * (T2 * (1 + (2 * d + 7) * uu) * tr_V + (d + 4) * (1 + 3 * uu) * E_c2)
          + uu**2 * (1 + 2 * uu) * (d + 2) * s2**2 * T2)
    return dict(theta=theta, mu=mu, u=uu, tr_V=tr_V, n3=n3, n=n, apply_V=apply_V, apply_A=apply_A,
                apply_K=apply_K, tr_K=tr_K, E_c2=E_c2, E_V2c2=E_V2c2, E_V2sq=E_V2sq, Q4=Q4)


def fo_maml_population_gradient(params: Params, problem, *, alpha, m_in):
    """Expected FO-MAML outer gradient (one inner step) over infinitely many Gaussian tasks with
    Gaussian features: (Params(grad_B, grad_w), expected outer loss). See the module docstring."""
    B, w = params
    d = B.shape[-2]
    s2 = problem.noise_std**2
    mom = fo_maml_population_moments(B, w, problem, m_in=m_in)
    theta, mu, u, tr_V = mom["theta"], mom["mu"], mom["u"], mom["tr_V"]
    apply_V, apply_A, apply_K = mom["apply_V"], mom["apply_A"], mom["apply_K"]
    a = np.asarray(alpha, dtype=np.float64)
    a2 = a[..., None, None]
    ww = _dot(w, w)
    BtB = _t(B) @ B

    def apply_R(M):
        return B @ (_t(B) @ M) + ww[..., None, None] * M

    def tr_R(XB, tr_X):
        """tr(R X) from X B (..., d, k') and tr X."""
        return np.einsum("...dk,...dk->...", B, XB) + ww * tr_X

    def tr_R2(XB, tr_X):
        """tr(R^2 X) for symmetric X."""
        BtXB = _t(B) @ XB
        return np.einsum("...ij,...ij->...", BtB, BtXB) + 2 * ww * np.einsum("...dk,...dk->...", B, XB) \
            + ww**2 * tr_X

    VB, AB, KB = apply_V(B), apply_A(B), apply_K(B)
    A_th = apply_A(_col(theta))[..., 0]
    R_mu = apply_R(_col(mu))[..., 0]
    tr_A = (1 + u) * tr_V + d * (tr_V + s2) * u
    grad_B = (_col(mu - a[..., None] * R_mu) * w[..., None, :] - a2 * VB + a2**2 * apply_R(AB)
              + a2**2 * _col(A_th) * w[..., None, :] - a2**3 * KB)
    grad_w = (np.einsum("...dk,...d->...k", B, mu - a[..., None] * R_mu + a[..., None] ** 2 * A_th)
              + (-a * tr_V + a**2 * tr_R(AB, tr_A) - a**3 * mom["tr_K"])[..., None] * w)

    cross = (1 + u) * _dot(theta, mom["n3"]) + u * _dot(theta, mom["n"])
    tr_K_R = np.einsum("...dk,...dk->...", B, KB) + ww * mom["tr_K"]
    risk = (tr_V - 2 * a * tr_R(VB, tr_V) + a**2 * tr_R2(AB, tr_A) + 2 * a**2 * cross
            - 2 * a**3 * tr_K_R + a**4 * mom["Q4"])
    loss = 0.5 * (risk + s2)
    return Params(grad_B, grad_w), (float(loss) if np.ndim(loss) == 0 else loss)


METHOD = Method(
    name="fo-maml",
    summary="first-order MAML: inner steps on B and w, first-order outer step",
    adapts="representation and head",
    train_keys=("alpha", "inner_steps"),
    relative_cost=2.8,
    gradient=fo_maml_gradient,
    population_gradient=fo_maml_population_gradient,
    cost="O(s N m d + s N d k' + s^2 N (d + k')): s + 1 kernel passes over the samples "
         "(one fused pass when s = 1 and k' > 2d/3)",
)
