"""The benchmark's Markdown report and its JSON form."""

from __future__ import annotations

from dataclasses import asdict

from metarep.bench import contenders as _contenders
from metarep.bench.config import TOLERANCE, BenchResult
from metarep.bench.machine import describe
from metarep.bench.scale import task_data_bytes

TABLE_COLUMNS = ("method", "dtype", "contender", "ms/step", "tasks/s", "GB/s", "time / metarep",
                 "runs", "faults/step", "other CPU", "agreement", "note")


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def _other(cores: float | None, busy: float) -> str:
    return "-" if cores is None else f"{cores:.2f}" + (" (busy)" if cores > busy else "")


def table_rows(result: BenchResult) -> list[list[str]]:
    busy = result.config.busy_limit()
    out = []
    for r in result.rows:
        note = r.note if r.status != "ok" else ""
        out.append([r.method, r.dtype, r.contender, _fmt_ms(r.ms), _fmt(r.tasks_per_s, ",.0f"),
                    _fmt(r.gbps, ".2f"), "-" if r.ratio is None else f"{r.ratio:.2f}x",
                    str(len(r.times)) if r.times else "-", _fmt(r.faults, ",.0f"), _other(r.other_cores, busy),
                    _fmt(r.error, ".0e"), note])
    return out


def markdown_table(header, rows) -> str:
    from metarep.storage.tables import markdown_table as table

    return table(header, [[str(c) for c in row] for row in rows])


def _intro(result: BenchResult) -> str:
    cfg = result.config
    nb = task_data_bytes(cfg.n_tasks, cfg.m_in, cfg.m_out, cfg.d)
    load = (f" {cfg.load} CPU-bound process{'es' if cfg.load != 1 else ''} ran beside the contenders "
            f"while they were timed (`--load {cfg.load}`)." if cfg.load else "")
    return (f"One outer step, N = {cfg.n_tasks}, m_in = {cfg.m_in}, m_out = {cfg.m_out}, d = {cfg.d}, "
            f"k' = {cfg.width}, alpha = {cfg.alpha}; task data {nb / 1e6:.1f} MB in float64. "
            f"Median of at least {cfg.repeats} timed runs (and at least {cfg.min_time:g} s) after {cfg.warmup} "
            f"warm-up runs, in {cfg.rounds} interleaved rounds, each block after {cfg.settle:g} s idle "
            f"(loops over tasks: {cfg.loop_repeats} runs), all in one process on the same data.{load} "
            f"Every gradient was checked against {result.reference} first "
            f"(float64 to {TOLERANCE['float64']:.0e}, float32 to {TOLERANCE['float32']:.0e}, relative to "
            f"max(1, |value|)). GB/s = bytes of task data one step must read / time; "
            f"time / metarep is relative to {result.reference} (metarep's default: its kernels on the threads "
            f"`metarep.compute.threads` chooses; /1thread: the same on one thread) on the same method and dtype; "
            f"faults/step = page faults per call (fresh large temporaries; expensive on a virtual machine); "
            f"other CPU = cores other processes kept busy meanwhile (above {cfg.busy_limit():g}: busy, "
            f"the time is suspect; such rows were re-timed up to {cfg.busy_retries} times and the "
            f"quietest kept)."
            + (" Quick mode: too few runs for reliable numbers." if cfg.quick else ""))


def _machine(result: BenchResult) -> list[str]:
    cfg = result.config
    parts = [f"- {line}" for line in describe(result.machine)]
    parts.append(f"- load average before / after: {result.load_before} / {result.load_after}")
    if "allocator" in result.machine:
        parts.append(f"- memory allocator: {result.machine['allocator']}")
    if result.read_bandwidth:
        each = ", ".join(f"{b / 1e9:.1f}" for b in result.read_bandwidth_probes)
        parts.append(f"- read bandwidth (sum over a {(cfg.bandwidth_bytes or 0) / 1e6:.0f} MB float64 array, one slice "
                     f"per usable core): {result.read_bandwidth / 1e9:.1f} GB/s, the median of probes taken "
                     f"before, between and after the timings ({each} GB/s)")
    return parts


def _population(pop: dict | None, busy: float) -> list[str]:
    if pop is None:
        return []
    if "error" in pop:
        return ["", "## Population (infinite tasks)", "", f"Failed: {pop['error']}"]
    return ["", "## Population (infinite tasks)", "",
            f"Exact FO-ANIL population steps (MATH 4), d = {pop['d']}, k' = {pop['width']}, "
            f"k = {pop['k']}, alpha = {pop['alpha']}, beta = {pop['beta']}, m_in = {pop['m_in']}.", "",
            f"- one run: {pop['steps']} steps in {pop['seconds']:.2f} s "
            f"({pop['single_steps_per_s']:,.0f} steps/s, {1e6 / pop['single_steps_per_s']:.1f} us/step"
            f"{', finite' if pop['finite'] else ', NOT FINITE'}; other CPU {_other(pop['other_cores'], busy)})",
            f"- {pop['batch']} runs along a leading axis: {pop['batch_steps']} steps in "
            f"{pop['batch_seconds']:.2f} s ({pop['batch_run_steps_per_s']:,.0f} run-steps/s, "
            f"{pop['batch_speedup']:.1f}x the throughput of one run after another); "
            f"first run equals the same run done alone to {pop['batch_error']:.0e}; other CPU "
            f"{_other(pop['batch_other_cores'], busy)}",
            f"- arithmetic: {pop['flops_per_step']:,} flop per run-step; one run computes at "
            f"{pop['single_gflops']:.1f} GFLOP/s, the batch at {pop['batch_gflops']:.1f} GFLOP/s, "
            f"and a float64 matrix product on all cores at {pop['gemm_gflops']:.1f} GFLOP/s. Batching "
            f"removes per-call overhead, not arithmetic, so its gain is at most "
            f"{pop['batch_speedup_ceiling']:.1f}x here (the ceiling)."]


def format_report(result: BenchResult) -> str:
    cfg = result.config
    parts = ["# metarep bench", "", _intro(result), "", "## Machine", "", *_machine(result)]
    parts += ["", "## One outer step", "", markdown_table(TABLE_COLUMNS, table_rows(result))]
    busy = [r for r in result.rows if r.other_cores is not None and r.other_cores > cfg.busy_limit()]
    if busy:
        parts += ["", f"Warning: other processes kept up to {max(r.other_cores or 0.0 for r in busy):.1f} cores busy "
                      f"while {len(busy)} of the rows were timed (marked busy): those times are not reliable; "
                      f"run again on an idle machine."]
    parts += _population(result.population, cfg.busy_threshold)
    parts += ["", "## Targets", "",
              markdown_table(("target", "required", "measured", "result"),
                             [[t.name, t.required, t.measured, t.status] for t in result.targets])]
    skipped = [r for r in result.rows if r.status != "ok"]
    if skipped:
        parts += ["", "Not timed: " + "; ".join(sorted({f"{r.contender} ({r.status}: {r.note})"
                                                         for r in skipped}))]
    parts += ["", f"Wall time {result.wall_seconds:.0f} s.", ""]
    return "\n".join(parts)


def result_to_dict(result: BenchResult) -> dict:
    rows = []
    for r in result.rows:
        rows.append({"method": r.method, "dtype": r.dtype, "contender": r.contender, "status": r.status,
                     "ms": r.ms, "tasks_per_s": r.tasks_per_s, "gbps": r.gbps, "ratio": r.ratio,
                     "agreement": r.error, "faults_per_step": r.faults, "other_cores": r.other_cores,
                     "attempts": r.attempts, "times_s": r.times, "note": r.note,
                     "description": _contenders.DESCRIPTIONS.get(r.contender, "")})
    return {
        "config": result.config.model_dump(), "machine": result.machine, "reference": result.reference,
        "read_bandwidth_gbps": None if result.read_bandwidth is None else result.read_bandwidth / 1e9,
        "read_bandwidth_probes_gbps": [b / 1e9 for b in result.read_bandwidth_probes],
        "rows": rows, "population": result.population, "targets": [asdict(t) for t in result.targets],
        "load_before": result.load_before, "load_after": result.load_after,
        "wall_seconds": result.wall_seconds,
    }
