"""A description of the machine a benchmark ran on: cores, CPU, BLAS and its threads, versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

#: packages whose versions are recorded (distribution names)
PACKAGES = ("numpy", "scipy", "numba", "torch", "higher", "jax", "jaxlib", "threadpoolctl")

#: environment variables that change how fast the numerical libraries run
ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS", "METAREP_KERNEL", "METAREP_THREADS", "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_", "XLA_FLAGS")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str | None]:
    """Installed versions of the numerical packages (None when absent); nothing is imported."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def blas_info() -> list[dict]:
    """The BLAS/OpenMP libraries loaded in this process and their thread counts (threadpoolctl).

    Returns an empty list when threadpoolctl is not installed.
    """
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer",
            "filepath")
    return [{k: info.get(k) for k in keep if info.get(k) is not None} for info in threadpool_info()]


def thread_counts() -> dict[str, int]:
    """Threads the frameworks that are already imported will use (nothing new is imported)."""
    from metarep.compute import threads
    out: dict[str, int] = {"metarep kernels": threads.count()}
    if "torch" in sys.modules:
        out["torch"] = int(sys.modules["torch"].get_num_threads())
    return out


def load_average() -> tuple[float, float, float] | None:
    """1, 5 and 15 minute load averages, None where the OS does not report them."""
    try:
        return tuple(round(x, 2) for x in os.getloadavg())  # type: ignore[return-value]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    """Everything the report records about the machine."""
    import numpy as np

    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "versions": versions(),
        "blas": blas_info(),
        "threads": thread_counts(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "load_average": load_average(),
    }


def describe(info: dict) -> list[str]:
    """Human-readable lines of `machine_info`."""
    lines = [f"CPU: {info['cpu_model']}, {info['cores']} usable cores ({info['logical_cpus']} logical)",
             f"Python {info['python']} on {info['platform']}"]
    v = info["versions"]
    lines.append("versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k] is not None)
                 + ("; not installed: " + ", ".join(k for k in v if v[k] is None)
                    if any(v[k] is None for k in v) else ""))
    if info["blas"]:
        for lib in info["blas"]:
            arch = lib.get("architecture") or lib.get("threading_layer")
            name = " ".join(str(x) for x in (lib.get("internal_api", "?"), lib.get("version")) if x)
            lines.append(f"{lib.get('user_api', '?')}: {name}"
                         f"{f' ({arch})' if arch else ''}, {lib.get('num_threads', '?')} threads"
                         f" [{os.path.basename(lib.get('filepath', '?'))}]")
    else:
        lines.append("BLAS: unknown (threadpoolctl not installed)")
    if info["threads"]:
        lines.append("framework threads: " + ", ".join(f"{k} {n}" for k, n in info["threads"].items()))
    env = info["env"]
    lines.append("environment: " + (", ".join(f"{k}={val}" for k, val in env.items()) if env
                                    else "OPENBLAS_CORETYPE and thread variables not set"))
    if info["load_average"] is not None:
        lines.append("load average (1, 5, 15 min): " + ", ".join(str(x) for x in info["load_average"]))
    return lines


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (plus time stolen by the hypervisor)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...
    values = [int(x) for x in fields[1:9]] + [0] * max(0, 8 - len(fields[1:9]))
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Measures how many cores other processes kept busy while a block ran.

        with OtherLoad() as load:
            ...
        load.cores   # average cores used by everything but this process (None if unknown)

    Read from /proc/stat (10 ms resolution), so blocks shorter than `MIN_WALL` give None. Work on
    a core shared with the timed code slows it down, the parallel kernels most of all.
    """

    #: shorter blocks are not measured: /proc/stat counts in 10 ms ticks
    MIN_WALL = 0.2

    def __init__(self) -> None:
        self.cores: float | None = None
        self.other_seconds: float | None = None   # CPU seconds used by other processes
        self.wall = 0.0

    def __enter__(self) -> OtherLoad:
        import time

        self._wall = time.perf_counter()
        self._own = time.process_time()
        self._busy = _machine_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        import time

        busy = _machine_busy_seconds()
        self.wall = wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        if busy is None or self._busy is None:
            self.other_seconds = self.cores = None
            return
        # unclamped: tick rounding makes short blocks err either way, and sums of blocks cancel it
        self.other_seconds = busy - self._busy - own
        self.cores = max(0.0, self.other_seconds / wall) if wall >= self.MIN_WALL else None
