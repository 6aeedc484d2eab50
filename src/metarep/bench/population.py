"""Population (infinite-task) throughput for `metarep bench`: one run, and many runs batched."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from metarep.bench.bandwidth import measure_gemm_rate
from metarep.bench.config import BenchConfig, resolved
from metarep.bench.machine import OtherLoad
from metarep.bench.targets import TARGET_POPULATION_STEPS


def paper_problem(d: int, rng):
    from metarep.families.problem import make_problem

    k = min(5, d)
    return make_problem(d, k, task_cov=list(np.arange(1.0, k + 1) / k), noise_std=2.0, rng=rng)



POP_ALPHA, POP_BETA, POP_M_IN = 0.1, 0.05, 20


def run_population(cfg: BenchConfig, log: Callable[[str], None]) -> dict:
    """Time `pop_steps` exact population steps of one run, and `pop_batch_steps` steps of
    `pop_batch` runs (different initialisations) along a leading axis; check that the batched
    run's first seed matches the same run done alone."""
    from metarep.linear.params import Params
    from metarep.linear.population import population_step, step_flops

    d, width = cfg.d, cfg.width
    rng = np.random.default_rng(cfg.seed + 1)
    problem = paper_problem(d, rng)
    S, steps, batch_steps = resolved(cfg.pop_batch), resolved(cfg.pop_steps), resolved(cfg.pop_batch_steps)
    B0 = rng.standard_normal((S, d, width)) / math.sqrt(d)
    w0 = np.zeros((S, width))
    kw = {"alpha": POP_ALPHA, "beta": POP_BETA, "m_in": POP_M_IN}

    def run_single(steps: int) -> tuple[Params, float]:
        params = Params(B0[0].copy(), w0[0].copy())
        t0 = time.perf_counter()
        for _ in range(steps):
            params, _ = population_step(params, problem, **kw)
        return params, time.perf_counter() - t0

    run_single(min(10, steps))        # warm-up
    log(f"population: {steps} steps, one run, d = {d}, k' = {width} ...")
    with OtherLoad() as load_single:
        single_params, single_s = run_single(steps)
    finite = single_params.is_finite()

    log(f"population: {batch_steps} steps of {S} runs batched ...")
    params = Params(B0.copy(), w0.copy())
    population_step(params, problem, **kw)    # warm-up
    with OtherLoad() as load_batch:
        t0 = time.perf_counter()
        for _ in range(batch_steps):
            params, _ = population_step(params, problem, **kw)
        batch_s = time.perf_counter() - t0
    check_params, _ = run_single(batch_steps)
    scale = max(1.0, float(np.max(np.abs(check_params.B))))
    batch_error = float(max(np.max(np.abs(params.B[0] - check_params.B)),
                            np.max(np.abs(params.w[0] - check_params.w)))) / scale

    single_rate = steps / single_s
    batch_rate = S * batch_steps / batch_s
    flops = step_flops(d, problem.k, width)
    gemm_rate = measure_gemm_rate(256 if cfg.quick else 1024)
    extrapolated = steps != TARGET_POPULATION_STEPS
    return {
        "d": d, "width": width, "k": problem.k, "alpha": POP_ALPHA, "beta": POP_BETA, "m_in": POP_M_IN,
        "steps": steps, "seconds": single_s, "finite": finite,
        "seconds_for_target": single_s * TARGET_POPULATION_STEPS / steps,
        "extrapolated": extrapolated,
        "single_steps_per_s": single_rate,
        "batch": S, "batch_steps": batch_steps, "batch_seconds": batch_s,
        "batch_run_steps_per_s": batch_rate, "batch_speedup": batch_rate / single_rate,
        "batch_error": batch_error,
        "other_cores": load_single.cores, "batch_other_cores": load_batch.cores,
        # the roofline: a batch can at best run every step at the machine's matrix-product rate
        "flops_per_step": flops, "gemm_gflops": gemm_rate / 1e9,
        "single_gflops": flops * single_rate / 1e9, "batch_gflops": flops * batch_rate / 1e9,
        "batch_speedup_ceiling": gemm_rate / (flops * single_rate),
    }
