"""The data model: multi-task linear regression with a shared rank-k representation (MATH 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metarep.families.tasks import Tasks


@dataclass(frozen=True)
class Problem:
    """Ground truth of the task distribution.

    B_star: (d, k) with orthonormal columns; mu_star: (k,) head mean;
    Sigma_star: (k, k) head covariance (symmetric PSD); noise_std: label noise sigma;
    teacher: the tasks' shared features, "linear" (B*^T x, MATH 1) or "relu" (relu(B*^T x)).
    """

    B_star: np.ndarray
    mu_star: np.ndarray
    Sigma_star: np.ndarray
    noise_std: float
    teacher: str = "linear"

    @property
    def d(self) -> int:
        return self.B_star.shape[0]

    @property
    def k(self) -> int:
        return self.B_star.shape[1]

    def teacher_features(self, X: np.ndarray) -> np.ndarray:
        """The teacher's representation of inputs X (..., d): X B* or relu(X B*), (..., k)."""
        Z = X @ self.B_star
        return np.maximum(Z, 0.0) if self.teacher == "relu" else Z

    @property
    def M_star(self) -> np.ndarray:
        """Second moment of the heads, E[w* w*^T] = Sigma* + mu* mu*^T, (k, k)."""
        return self.Sigma_star + np.outer(self.mu_star, self.mu_star)


def as_mean(task_mean, k: int) -> np.ndarray:
    """mu* from a scalar (every entry) or a length-k sequence."""
    mean = np.asarray(task_mean, dtype=np.float64)
    if mean.ndim == 0:
        return np.full(k, float(mean))
    if mean.shape != (k,):
        raise ValueError(f"problem.task_mean: expected a scalar or a list of k={k} numbers, got shape {mean.shape}")
    return mean.copy()


def as_covariance(task_cov, k: int) -> np.ndarray:
    """Sigma* from a scalar c (c I_k), a length-k diagonal, or a k x k symmetric PSD matrix."""
    cov = np.asarray(task_cov, dtype=np.float64)
    if cov.ndim == 0:
        cov = float(cov) * np.eye(k)
    elif cov.ndim == 1:
        if cov.shape != (k,):
            raise ValueError(f"problem.task_cov: a diagonal must have k={k} entries, got {cov.shape[0]}")
        cov = np.diag(cov)
    elif cov.shape != (k, k):
        raise ValueError(f"problem.task_cov: a matrix must be {k} x {k}, got {cov.shape}")
    if not np.allclose(cov, cov.T, atol=1e-12):
        raise ValueError("problem.task_cov: the matrix must be symmetric")
    if np.linalg.eigvalsh(cov).min() < -1e-12:
        raise ValueError("problem.task_cov: entries (eigenvalues) must be >= 0")
    return cov


def random_orthonormal(d: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Q factor of a (d, k) Gaussian matrix, signs fixed so the draw is unique."""
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


TEACHERS = ("linear", "relu")


def make_problem(d: int, k: int, *, task_mean=0.0, task_cov=1.0, noise_std=1.0,
                 rng: np.random.Generator, teacher: str = "linear") -> Problem:
    """Draw B* from `rng` and assemble the problem (MATH 1); `teacher` as in Problem."""
    if teacher not in TEACHERS:
        raise ValueError(f"problem.teacher must be one of {', '.join(TEACHERS)}, got {teacher!r}")
    if not 1 <= k <= d:
        raise ValueError(f"problem.k must satisfy 1 <= k <= d = {d}, got {k}")
    if noise_std < 0:
        raise ValueError(f"problem.noise_std must be >= 0, got {noise_std}")
    return Problem(B_star=random_orthonormal(d, k, rng), mu_star=as_mean(task_mean, k),
                   Sigma_star=as_covariance(task_cov, k), noise_std=float(noise_std), teacher=teacher)


def covariance_factor(cov: np.ndarray) -> np.ndarray:
    """L with L L^T = cov, valid for singular PSD matrices too."""
    vals, vecs = np.linalg.eigh(cov)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))


def sample_heads(problem: Problem, n: int, rng: np.random.Generator) -> np.ndarray:
    """n Gaussian heads w*_i ~ N(mu*, Sigma*), shape (n, k)."""
    z = rng.standard_normal((n, problem.k))
    return problem.mu_star + z @ covariance_factor(problem.Sigma_star).T


def sample_labels(problem: Problem, X: np.ndarray, w_star: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """y = X B* w*_i + z (linear teacher) or relu(X B*) w*_i + z (relu teacher) for X (n, m, d),
    w_star (n, k); returns (n, m)."""
    if problem.teacher == "linear":
        clean = np.einsum("nmd,nd->nm", X, w_star @ problem.B_star.T)
    else:
        clean = np.einsum("nmk,nk->nm", problem.teacher_features(X), w_star)
    return clean + problem.noise_std * rng.standard_normal(clean.shape)


def sample_tasks(problem: Problem, n_tasks: int, m_in: int, m_out: int,
                 rng: np.random.Generator, *, w_star: np.ndarray | None = None) -> Tasks:
    """N fresh tasks with independent inner (m_in) and outer (m_out) samples (MATH 1).

    Returns Tasks with X_in (N, m_in, d), y_in (N, m_in), X_out (N, m_out, d), y_out (N, m_out)
    and the true heads w_star (N, k). `m_out` may be 0 (no outer set).
    """
    if w_star is None:
        w_star = sample_heads(problem, n_tasks, rng)
    X_in = rng.standard_normal((n_tasks, m_in, problem.d))
    y_in = sample_labels(problem, X_in, w_star, rng)
    X_out = rng.standard_normal((n_tasks, m_out, problem.d))
    y_out = sample_labels(problem, X_out, w_star, rng)
    return Tasks(X_in=X_in, y_in=y_in, X_out=X_out, y_out=y_out, w_star=w_star)
