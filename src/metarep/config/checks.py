"""The checks a config passes as a whole (values fine one by one, wrong together): what the task
regime asks of the method, the method's own constraints, and whether the limit Lambda* exists.
Each raises ValueError with one line naming the keys.
Their arguments are the schema's sections (`Config`, `ProblemConfig`, `TrainConfig` of
metarep.config.schema), typed Any here: the schema calls these checks and is not imported back."""

from __future__ import annotations

import math
from typing import Any

from metarep.families.problem import as_covariance
from metarep.models import get_arch

INF = "inf"


def check_covariance(task_cov: list, k: int) -> None:
    """as_covariance's checks, without forming a k x k matrix for a diagonal."""
    if not task_cov or not isinstance(task_cov[0], list):
        if len(task_cov) != k:
            raise ValueError(f"problem.task_cov: a diagonal must have k={k} entries, got {len(task_cov)}")
        if min(task_cov) < 0:
            raise ValueError("problem.task_cov: entries (eigenvalues) must be >= 0")
        return
    if len(task_cov) != k or any(len(row) != k for row in task_cov):
        raise ValueError(f"problem.task_cov: a matrix must be {k} x {k}, got {len(task_cov)} rows of lengths "
                         f"{sorted({len(row) for row in task_cov})}")
    as_covariance(task_cov, k)


def _covariance_degeneracy(task_cov, k: int) -> tuple[bool, bool]:
    """(Sigma* is zero, Sigma* is singular), without forming a matrix for a scalar or a diagonal."""
    if not isinstance(task_cov, list):
        return task_cov == 0, task_cov == 0
    if not isinstance(task_cov[0], list):
        return max(task_cov) == 0, min(task_cov) == 0
    import numpy as np

    cov = np.asarray(task_cov, dtype=np.float64)
    return not cov.any(), int(np.linalg.matrix_rank(cov, hermitian=True)) < k


def _lambda_star_finite(p: Any, t: Any) -> bool:
    """Whether theory.lambda_star gives finite numbers (and a solvable system) for these values;
    computed entrywise for a scalar or diagonal Sigma*, so a huge k costs nothing."""
    import numpy as np

    from metarep.linear.theory import lambda_star

    inv_m = 0.0 if isinstance(t.m_in, str) else 1.0 / t.m_in
    with np.errstate(all="ignore"):
        if p.k <= 256 or (isinstance(p.task_cov, list) and isinstance(p.task_cov[0], list)):
            try:  # exactly what the run will compute
                lam = lambda_star(as_covariance(p.task_cov, p.k), p.noise_std, t.alpha, t.m_in)
            except (np.linalg.LinAlgError, ArithmeticError, ValueError):
                return False
            return bool(np.isfinite(lam).all())
        diag = np.asarray(p.task_cov if isinstance(p.task_cov, list) else [p.task_cov], dtype=np.float64)
        trace = diag.sum() if isinstance(p.task_cov, list) else diag[0] * p.k
        inner = (1 + inv_m) * diag + (trace + np.float64(p.noise_std) ** 2) * inv_m
        lam = diag / inner / t.alpha
        return bool(np.isfinite(lam).all() and np.isfinite(inner).all() and (inner != 0).all())


def check_regime(c: Any) -> None:
    """What the task regime asks of the method (read from its declaration)."""
    t, method = c.train, c.method_spec
    name = repr(method.name)
    if t.tasks == INF and not method.iterative:
        raise ValueError(f"train.tasks = \"inf\" is for iterative methods, not {name}")
    if t.tasks == INF and not method.infinite_tasks:
        raise ValueError(f"train.tasks = \"inf\" needs a method with an exact population form; {name} (model.arch "
                         f"= {c.model.arch!r}) has none: use tasks = \"online\" with a large batch_tasks")
    if t.tasks != INF and INF in (t.m_in, t.m_out):
        raise ValueError("train.m_in and train.m_out may be \"inf\" only with train.tasks = \"inf\"")
    if t.tasks == INF and t.inner_steps != 1:
        raise ValueError("train.inner_steps must be 1 with train.tasks = \"inf\": the population forms "
                         "are derived for one inner step; use tasks = \"online\" for more")
    if t.tasks_per_step is not None and (not isinstance(t.tasks, int) or t.tasks_per_step > t.tasks):
        raise ValueError(f"train.tasks_per_step = {t.tasks_per_step} draws from a fixed set of tasks: it needs "
                         f"train.tasks to be a number at least as large (got {t.tasks!r})")
    if t.tasks_per_step is not None and c.model.arch != "mlp":
        raise ValueError(f"train.tasks_per_step is read by model.arch = \"mlp\" (got {c.model.arch!r}): the "
                         f"{c.model.arch} model's steps use every task")
    if method.per_task_state and t.tasks == "online":
        raise ValueError(f"train.tasks = \"online\" does not fit {name}, which keeps one head per "
                         f"task: give a number of tasks")


def check_method(c: Any) -> None:
    """The method's own constraints, the test-time rules it admits, the devices its arch runs on."""
    method = c.method_spec
    if c.test.adapt not in ("default", "tuned") and c.test.adapt not in method.adapt_rules:
        raise ValueError(f"test.adapt = {c.test.adapt!r} is not available for method {method.name!r} (it takes "
                         f"{', '.join(method.adapt_rules)})")
    if c.test.adapt != "tuned" and c.adapt_rule == "bayes" and not method.needs_truth and INF in (c.train.m_in,
                                                                                               c.train.m_out):
        raise ValueError("test.adapt = \"bayes\" fits its prior to the training tasks' rows: it needs finite "
                         "train.m_in and train.m_out")
    arch = get_arch(c.model.arch)
    if c.problem.teacher not in arch.teachers:
        raise ValueError(f"problem.teacher = {c.problem.teacher!r} needs model.arch = \"mlp\": the {arch.name} "
                         f"model's test risk and population dynamics are written for a linear teacher")
    if c.train.device not in arch.devices:
        raise ValueError(f"train.device = {c.train.device!r}: model.arch = {arch.name!r} runs on "
                         f"{', '.join(arch.devices)}")
    if method.check is not None and c.data.source == "synthetic":  # a table's d is known once it is read
        method.check(c)


def check_limit(p: Any, t: Any) -> None:
    """The limit Lambda* (MATH 5) must exist and be finite."""
    zero, singular = _covariance_degeneracy(p.task_cov, p.k)
    if zero and p.noise_std ** 2 == 0:  # (a subnormal noise_std squares to 0 too)
        raise ValueError("problem.task_cov and problem.noise_std are both 0: every task is the same and the "
                         "limit Lambda* is undefined; make one of them positive")
    if singular and t.m_in == INF:
        raise ValueError("train.m_in = \"inf\" needs problem.task_cov without zero eigenvalues (the limit "
                         "Lambda* inverts it): make its entries positive or use a finite train.m_in")
    if not math.isfinite(p.noise_std * p.noise_std):
        raise ValueError(f"problem.noise_std is too large (its square overflows), got {p.noise_std}")
    if not _lambda_star_finite(p, t):
        raise ValueError("the limit Lambda* (MATH 5) is not a finite number for these values of "
                         "problem.task_cov, problem.noise_std and train.alpha: they are too close to 0 "
                         "or too large")
