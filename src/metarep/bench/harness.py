"""The step benchmark: every contender times one outer step of FO-ANIL / exact ANIL on the same
data, in one process, after its gradient has been checked against metarep's.

`run_benchmark(BenchConfig(...))` returns a `BenchResult`; `format_report` turns it into the
Markdown report that `metarep bench` prints (machine, one table of step times, population
throughput, targets with PASS/FAIL) and `result_to_dict` into JSON.

How a contender is timed: it is built (data converted or uploaded once), called once and its
gradient and loss compared with metarep's (a contender that disagrees is reported as rejected,
without a time), called `warmup` more times, then timed with `time.perf_counter` at least
`repeats` times and for at least `min_time` seconds in all; the table gives the median. The
vectorised contenders of one (method, dtype) are timed in `rounds` interleaved blocks (each
later block starts with one untimed call), so that a drift of the machine's speed affects them
alike. Each block starts after `settle` idle seconds: worker threads of a multi-threaded BLAS
(OpenBLAS) or runtime keep spinning for about 0.1 s after their last call, and would otherwise
slow whichever contender comes next. Loop contenders (a Python loop over tasks) get
`loop_repeats` timed calls and no extra warm-up, and run after all the others.

The machine may be shared: while a contender is timed, the CPU time used by other processes is
measured (`machine.OtherLoad`). A vectorised contender timed while other processes kept more than
`busy_threshold` cores busy is timed again after `busy_wait` seconds, up to `busy_retries` times,
and the quietest attempt is kept; the report marks rows that stayed busy.

Effective bandwidth is the bytes of task data one step must read at least once
(N (m_in + m_out) (d + 1) numbers) divided by the step time; it is compared with the machine's
read bandwidth (`bandwidth.measure_read_bandwidth`).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable

import numpy as np

from metarep.bench import contenders as _contenders
from metarep.bench.bandwidth import measure_read_bandwidth
from metarep.bench.config import DTYPES, METHODS, PAPER, TOLERANCE, BenchConfig, BenchResult, Row, resolved
from metarep.bench.load import cpu_load
from metarep.bench.machine import OtherLoad, load_average, machine_info
from metarep.bench.population import paper_problem, run_population
from metarep.bench.scale import task_data_bytes
from metarep.bench.targets import evaluate_targets

__all__ = ["DTYPES", "METHODS", "PAPER", "TOLERANCE", "BenchConfig", "BenchResult", "Row", "agreement",
           "run_benchmark", "run_population", "run_steps"]

# ----------------------------------------------------------------------------------------------
# Data and timing
# ----------------------------------------------------------------------------------------------

def make_data(cfg: BenchConfig):
    """The paper's task distribution at the configured sizes, and a point (B, w), in float64.

    k = min(5, d) true directions, Sigma* proportional to diag(1, ..., k), label noise sigma = 2,
    x ~ N(0, I_d); B has N(0, 1/d) entries and w N(0, 1/k') entries (a non-zero head, so every
    term of the gradients is exercised).
    """
    from metarep.families.problem import sample_tasks

    rng = np.random.default_rng(cfg.seed)
    problem = paper_problem(cfg.d, rng)
    tasks = sample_tasks(problem, cfg.n_tasks, cfg.m_in, cfg.m_out, rng)
    B = rng.standard_normal((cfg.d, cfg.width)) / math.sqrt(cfg.d)
    w = rng.standard_normal(cfg.width) / math.sqrt(cfg.width)
    return (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out), B, w


def agreement(out, ref) -> float:
    """max over grad_B, grad_w and the loss of max |a - b| / max(1, max |b|); inf on a shape mismatch."""
    worst = 0.0
    for a, b in zip(out, ref):
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return math.inf
        if not b.size:
            continue
        diff = float(np.max(np.abs(a - b)))
        if not math.isfinite(diff):
            return math.inf
        worst = max(worst, diff / max(1.0, float(np.max(np.abs(b)))))
    return worst


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 0, min_time: float = 0.0) -> list[float]:
    """Call `fn` `warmup` times untimed, then time it at least `repeats` times and until the timed
    calls add up to `min_time` seconds; seconds per call."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    total = 0.0
    while len(times) < repeats or total < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return times


def page_faults() -> int | None:
    """Page faults of this process so far (minor + major), None where the OS does not say.

    Large temporaries allocated afresh every step are paid for in page faults; on a virtual
    machine each can cost far more than on bare metal, and that cost varies with what the host
    is doing. The count per step explains much of the spread between runs.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def _default_backend() -> str:
    from metarep.compute import kernels

    return kernels.backend()


# ----------------------------------------------------------------------------------------------
# The step benchmark
# ----------------------------------------------------------------------------------------------

def contender_order(cfg: BenchConfig, reference: str) -> list[str]:
    """The contenders to run: the reference (metarep's default) and its one-thread path first,
    then the others in registry order."""
    first = [reference, f"{reference}/1thread"]
    names = list(_contenders.CONTENDERS) if cfg.contenders is None else list(cfg.contenders)
    return first + [n for n in names if n not in first]


def run_steps(cfg: BenchConfig, reference: str, log: Callable[[str], None]) -> list[Row]:
    """Check and time every contender on every (method, dtype).

    The vectorised contenders of every (method, dtype) run first and the slow loops over tasks
    last. Within a (method, dtype) the vectorised contenders are timed in `rounds` interleaved
    blocks, so that a slow drift of the machine's speed (other virtual machines on the host
    share its memory bandwidth) affects all of them alike.
    """
    data64, B64, w64 = make_data(cfg)
    inputs = {}
    for dtype in cfg.dtypes:
        np_dt = np.dtype(dtype)
        inputs[dtype] = (tuple(np.ascontiguousarray(a, dtype=np_dt) for a in data64),
                         B64.astype(np_dt), w64.astype(np_dt),
                         task_data_bytes(cfg.n_tasks, cfg.m_in, cfg.m_out, cfg.d, np_dt.itemsize))
    refs = {}
    for method in cfg.methods:
        for dtype in cfg.dtypes:
            data, B, w, _ = inputs[dtype]
            # the reference: metarep in float64 on exactly these (possibly rounded) numbers
            ref_data = tuple(a.astype(np.float64) for a in data)
            X_in, y_in, X_out, y_out = ref_data
            ref_step = _contenders.make_contender(reference, X_in, y_in, X_out, y_out, cfg.alpha, method, np.float64)
            refs[method, dtype] = ref_step(B.astype(np.float64), w.astype(np.float64))
            del ref_step, ref_data
    names = contender_order(cfg, reference)
    rows: dict[tuple, Row] = {}
    for loops in (False, True):
        for method in cfg.methods:
            for dtype in cfg.dtypes:
                data, B, w, nbytes = inputs[dtype]
                ready = {}
                for name in names:
                    if (name in _contenders.LOOP_CONTENDERS) != loops:
                        continue
                    log(f"{method} {dtype} {name}: check ...")
                    row, step = _prepare(cfg, name, method, dtype, data, B, w, refs[method, dtype], nbytes)
                    rows[method, dtype, name] = row
                    if step is None:
                        log(f"    {row.status}: {row.note}")
                    else:
                        ready[name] = (row, step)
                if ready:
                    log(f"{method} {dtype}: timing {', '.join(ready)} ...")
                    _time_rows(cfg, ready, B, w, loops, log)
                del ready
                gc.collect()
    ordered = [rows[m, dt, n] for m in cfg.methods for dt in cfg.dtypes for n in names]
    _fill_ratios(ordered, reference)
    return ordered


def _prepare(cfg, name, method, dtype, data, B, w, ref, nbytes):
    """Build a contender and check it against the reference: (row, step), step None if unusable."""
    row = Row(method, dtype, name, "ok", task_bytes=nbytes, n_tasks=cfg.n_tasks)
    try:
        X_in, y_in, X_out, y_out = data
        step = _contenders.make_contender(name, X_in, y_in, X_out, y_out, cfg.alpha, method, np.dtype(dtype))
    except ImportError as exc:
        row.status, row.note = "skipped", _first_line(exc)
        return row, None
    try:
        out = step(B, w)
    except Exception as exc:  # a contender that crashes is reported, not fatal
        row.status, row.note = "failed", f"{type(exc).__name__}: {_first_line(exc)}"
        return row, None
    row.error = agreement(out, ref)
    tol = TOLERANCE[dtype]
    if not row.error <= tol:
        row.status = "rejected"
        row.note = f"disagrees with metarep: error {row.error:.2e} > {tol:.0e}; not timed"
        return row, None
    return row, step


class _Tally:
    """Times, page faults and other processes' CPU time of one contender, over several blocks."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.calls = 0
        self.faults: float | None = 0.0
        self.other = 0.0
        self.wall = 0.0
        self.known = True

    def block(self, fn, repeats: int, warmup: int, min_time: float, settle: float = 0.0) -> None:
        if settle > 0:
            time.sleep(settle)        # let the previous contender's spinning worker threads go idle
        faults0 = page_faults()
        with OtherLoad() as load:
            times = time_calls(fn, repeats, warmup, min_time)
        faults1 = page_faults()
        if faults0 is None or faults1 is None or self.faults is None:
            self.faults = None
        else:
            self.faults += faults1 - faults0
        if load.other_seconds is None:
            self.known = False
        else:
            self.other += load.other_seconds
            self.wall += load.wall
        self.times += times
        self.calls += len(times) + warmup

    @property
    def cores(self) -> float | None:
        if not self.known or self.wall < OtherLoad.MIN_WALL:
            return None
        return max(0.0, self.other / self.wall)

    @property
    def faults_per_call(self) -> float | None:
        return None if self.faults is None or not self.calls else self.faults / self.calls


def _time_rows(cfg, ready: dict, B, w, loops: bool, log) -> None:
    """Time the checked contenders in `ready` (name -> (row, step)), interleaved unless loops."""
    if loops:
        for name, (row, step) in ready.items():
            tally = _Tally()
            tally.block(lambda step=step: step(B, w), cfg.loop_repeats, 0, 0.0, cfg.settle)
            _store(row, tally, 1)
            log(f"    {name}: {row.ms:.3f} ms")
        return
    rounds = max(1, cfg.rounds)
    per_block = max(1, math.ceil(cfg.repeats / rounds))
    tallies = {name: _Tally() for name in ready}
    for r in range(rounds):
        for name, (_, step) in ready.items():
            # the first block warms up fully; later ones take one untimed call to absorb the switch
            tallies[name].block(lambda step=step: step(B, w), per_block, cfg.warmup if r == 0 else 1,
                                cfg.min_time / rounds, cfg.settle)
    for name, (row, step) in ready.items():
        best, attempts = tallies[name], 1
        while (best.cores is not None and best.cores > cfg.busy_limit()
               and attempts <= cfg.busy_retries):
            log(f"    {name}: other processes kept {best.cores:.2f} cores busy; timing again "
                f"in {cfg.busy_wait:g} s")
            time.sleep(cfg.busy_wait)
            again = _Tally()
            again.block(lambda step=step: step(B, w), cfg.repeats, cfg.warmup, cfg.min_time, cfg.settle)
            attempts += 1
            if again.cores is not None and again.cores < best.cores:
                best = again
        _store(row, best, attempts)
        log(f"    {name}: {row.ms:.3f} ms")


def _store(row: Row, tally: _Tally, attempts: int) -> None:
    row.times, row.faults, row.other_cores, row.attempts = (tally.times, tally.faults_per_call, tally.cores,
                                                             attempts)


def _fill_ratios(rows: list[Row], reference: str) -> None:
    base = {(r.method, r.dtype): r.seconds for r in rows if r.contender == reference and r.seconds}
    for r in rows:
        b = base.get((r.method, r.dtype))
        r.ratio = None if (b is None or r.seconds is None) else r.seconds / b


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

def run_benchmark(cfg: BenchConfig, log: Callable[[str], None] | None = None) -> BenchResult:
    """Run everything `cfg` asks for and return the result (nothing is printed except via `log`)."""
    log = log or (lambda msg: None)
    cfg = cfg.resolved()
    t_start = time.perf_counter()
    load_before = load_average()
    reference = _contenders.metarep_contender(_default_backend())
    allocator = "glibc defaults"
    if cfg.retain_freed_memory:
        from metarep.compute import kernels

        retain = getattr(kernels, "retain_freed_memory", None)
        if retain is not None and retain():
            allocator = "freed memory retained (M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 1 GiB), for every contender"
        else:
            allocator = "glibc defaults (retaining freed memory is not available here)"
    probes: list[float] = []

    def probe() -> None:
        # the host's memory bandwidth drifts: probed before, between and after the timings
        if cfg.bandwidth:
            nbytes = resolved(cfg.bandwidth_bytes)
            log(f"read bandwidth ({nbytes / 1e6:.0f} MB array reduction) ...")
            probes.append(measure_read_bandwidth(nbytes))

    probe()
    if cfg.load:
        log(f"{cfg.load} CPU-bound process(es) run beside the contenders ...")
    with cpu_load(cfg.load):
        rows = run_steps(cfg, reference, log)
    probe()
    pop = None
    if cfg.population:
        try:
            pop = run_population(cfg, log)
        except Exception as exc:  # reported, not fatal: the step table is still worth having
            pop = {"error": f"{type(exc).__name__}: {_first_line(exc)}"}
            log(f"population: failed: {pop['error']}")
    probe()
    read_bw = statistics.median(probes) if probes else None
    machine = machine_info()              # after the runs: the frameworks' thread counts are known
    machine["allocator"] = allocator
    targets = evaluate_targets(rows, reference, read_bw, pop, cfg.busy_limit(), cfg.load)
    return BenchResult(config=cfg, machine=machine, reference=reference, rows=rows, read_bandwidth=read_bw,
                       population=pop, targets=targets,
                       load_before=load_before, load_after=load_average(),
                       wall_seconds=time.perf_counter() - t_start, read_bandwidth_probes=probes)
