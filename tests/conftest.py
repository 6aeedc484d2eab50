import numpy as np
import pytest

from metarep.families.problem import make_problem


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def general_problem(rng):
    """A problem with non-zero mu* and a non-diagonal Sigma* (the general case of MATH 4)."""
    A = rng.standard_normal((3, 3))
    cov = A @ A.T / 3 + 0.2 * np.eye(3)
    return make_problem(7, 3, task_mean=[0.5, -1.0, 0.3], task_cov=cov.tolist(), noise_std=0.7, rng=rng)


def naive_fo_anil(B, w, tasks, alpha, inner_steps=1):
    """FO-ANIL outer gradient by a plain per-task loop (MATH 3), the independent reference."""
    gB, gw, loss = np.zeros_like(B), np.zeros_like(w), 0.0
    N = tasks.n_tasks
    for i in range(N):
        X, y, Xo, yo = tasks.X_in[i], tasks.y_in[i], tasks.X_out[i], tasks.y_out[i]
        wi = w.copy()
        for _ in range(inner_steps):
            wi = wi - alpha * B.T @ (X.T @ (X @ B @ wi - y) / len(y))
        r = Xo @ B @ wi - yo
        g = Xo.T @ r / len(yo)
        gB += np.outer(g, wi) / N
        gw += B.T @ g / N
        loss += 0.5 * r @ r / len(yo) / N
    return gB, gw, loss
