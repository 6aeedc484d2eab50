"""Estimate the memory a run needs before allocating it, and refuse what cannot fit.

The estimate counts, in float64 numbers, what a run holds at its peak:

- problem: B* (d x k), Sigma* and friends (k x k), the parameters (d x k') and their updates;
- train_tasks: the training set (finite tasks) or one batch (online), with the true heads;
- working: per-task temporaries of one outer step, growing with train.inner_steps (the inner
  path keeps every iterate), plus per-method extras: one head per task (N x k') for methods
  with per-task heads such as Burer-Monteiro, a pooled copy of the data and d x d moments for
  direct (non-iterative) estimators; each architecture counts its own
  (`estimate_bytes` in its module under metarep.models);
- test_tasks: one chunk of TEST_CHUNK test tasks with their features X B and the head fit's
  workspace (m_test x m_test per task for the Bayes head), plus one risk per test task;
- history: the logged metric rows (Python objects, their checkpoint table and CSV text).

It is an estimate: the aim is to refuse runs that cannot fit, with the setting to change,
instead of letting the kernel kill them mid-way.
"""

from __future__ import annotations

import os

from metarep.config.schema import Config, ConfigError
from metarep.models import get_arch


class ResourceError(ConfigError):
    """The run would not fit in this machine's memory."""


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_available() -> int | None:
    """What the memory cgroup (v2, else v1) still allows this process, if it has a limit."""
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_path)
        if limit is not None and limit < 1 << 60:
            return max(0, limit - (_read_int(usage_path) or 0))
    return None


def _rlimit_available() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def available_bytes() -> int:
    """Memory available to a new allocation: the least of MemAvailable, what the memory cgroup
    still allows and the address-space limit (ulimit -v); physical memory as a fallback."""
    candidates = [v for v in (_meminfo_available(), _cgroup_available(), _rlimit_available()) if v is not None]
    if candidates:
        return min(candidates)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def estimate_bytes(config: Config) -> dict[str, int]:
    """Bytes each part of a run holds at its peak, as the configured architecture counts them
    (`estimate_bytes` of its experiment module; task data dominate)."""
    return get_arch(config.model.arch).module().estimate_bytes(config)


ADVICE = {
    "problem": "lower problem.d, problem.k or model.width",
    "train_tasks": "lower train.tasks, train.m_in/m_out or problem.d, or use train.tasks = \"online\"",
    "working": "lower train.tasks (or train.batch_tasks), train.inner_steps or model.width",
    "test_tasks": "lower test.tasks, test.m_test or problem.d",
    "history": "raise train.log_every or lower train.steps",
}


def _advice(config: Config, part: str) -> str:
    """ADVICE[part] in the keys of the configured network: the hidden layers of an mlp of three
    or more layers are model.hidden units wide (problem.d when left out), its last model.width."""
    text = ADVICE[part]
    options = config.model.options
    if getattr(options, "layers", 2) >= 3:
        first = "model.hidden" if getattr(options, "hidden", None) is not None else "model.hidden (default problem.d)"
        text = text.replace("model.width", f"{first} or model.width")
    return text


def _gib(n: int) -> str:
    try:
        return f"{n / 2**30:.3g} GiB"
    except OverflowError:  # sizes beyond a float: say how many digits
        return f"about 10^{len(str(n // 2**30)) - 1} GiB"


# More test tasks than this buys nothing a reader can see (the standard error is already 0.1%
# of the scores' spread) and costs minutes: a run evaluating 1e6 tasks took 7.8 s at d = 6,
# m_test = 5, one evaluating 4e5 took 12 s at d = 50, m_test = 20 (2 loaded cores; `metarep run`
# with train.steps = 1 and those keys), and the time grows with d and m_test.
MAX_TEST_TASKS = 1_000_000


def check_test_size(config: Config) -> None:
    """Refuse a test evaluation too long to be worth it (ResourceError naming test.tasks)."""
    n = config.test.tasks
    if n > MAX_TEST_TASKS:
        raise ResourceError(f"test.tasks = {n} is above the cap of {MAX_TEST_TASKS} (the standard error is "
                            f"already 0.1% of the scores' spread there, and the evaluation takes minutes): lower "
                            f"test.tasks")


def check_memory(config: Config, *, fraction: float = 0.8) -> int:
    """Raise ResourceError when the estimate exceeds `fraction` of available memory, or when
    test.tasks is above MAX_TEST_TASKS; return the estimate."""
    check_test_size(config)
    parts = estimate_bytes(config)
    need, have = sum(parts.values()), available_bytes()
    if need > fraction * have:
        biggest = max(parts, key=lambda name: parts[name])
        raise ResourceError(f"the run needs about {_gib(need)} ({biggest} {_gib(parts[biggest])}) but "
                            f"{_gib(have)} is available: {_advice(config, biggest)}")
    return need
