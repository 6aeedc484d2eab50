"""Estimate the memory a run needs before allocating it, and refuse what cannot fit."""

from __future__ import annotations

import os

from metarep.config import Config, ConfigError

FLOAT = 8
TEST_CHUNK = 2048


class ResourceError(ConfigError):
    """The run would not fit in this machine's memory."""


def available_bytes() -> int:
    """Memory available to a new allocation (MemAvailable), or physical memory as a fallback."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _size(value, default=0):
    return default if isinstance(value, str) else int(value)


def estimate_bytes(config: Config) -> dict[str, int]:
    """Bytes each part of a run holds at its peak (task data dominates)."""
    p, t, te, width = config.problem, config.train, config.test, config.model.width
    d = p.d
    m = _size(t.m_in) + _size(t.m_out)
    n_train = {"inf": 0, "online": t.batch_tasks}.get(t.tasks, t.tasks) if not isinstance(t.tasks, int) else t.tasks
    heads = n_train * width if t.method == "burer-monteiro" else 0
    return {
        "train_tasks": n_train * m * (d + 1) * FLOAT,
        "working": (n_train * (2 * d + 3 * width) + heads * 2 + 4 * d * width) * FLOAT,
        "test_tasks": min(te.tasks, TEST_CHUNK) * te.m_test * (d + width + 1) * FLOAT,
    }


def check_memory(config: Config, *, fraction: float = 0.8) -> int:
    """Raise ResourceError when the estimate exceeds `fraction` of available memory; return the estimate."""
    parts = estimate_bytes(config)
    need, have = sum(parts.values()), available_bytes()
    if need > fraction * have:
        biggest = max(parts, key=parts.get)
        advice = {"train_tasks": "lower train.tasks, train.m_in/m_out or problem.d, or use train.tasks = \"online\"",
                  "working": "lower train.tasks or model.width",
                  "test_tasks": "lower test.m_test or problem.d"}[biggest]
        raise ResourceError(f"the run needs about {need / 2**30:.1f} GiB ({biggest} "
                            f"{parts[biggest] / 2**30:.1f} GiB) but {have / 2**30:.1f} GiB is available: {advice}")
    return need
