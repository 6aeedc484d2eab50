"""Time the prediction-gradient kernel, the FO-ANIL step and the population step.

    python benchmarks/kernel_timing.py                      # active backend (METAREP_KERNEL)
    python benchmarks/kernel_timing.py --backend numpy --backend numba
    python benchmarks/kernel_timing.py --skip-population --repeats 5
    python benchmarks/kernel_timing.py --retain-memory      # with the glibc allocator setting
    python benchmarks/kernel_timing.py --threshold          # one thread against all, by size

Paper setting: N = 5000 tasks, m_in = 20, m_out = 10, d = k' = 50, float64 (61.2 MB of task
data). For each backend it reports the kernel alone on X_in and X_out, the task sums of the
one-inner-step pass (`metarep.linear.one_step`: the NumPy composition, and with numba the fused pass)
for FO-ANIL and exact ANIL, and the FO-ANIL, exact ANIL and FO-MAML gradients per step (FO-MAML
also through the general inner loop that the one-step pass replaces), as the minimum and the
median over blocks of steps, with the effective bandwidth (task bytes / time). The population part times
`population_step` for one run (d = k' = 50) and for a batch of runs along a leading axis (it does
not use the kernel backend: timed once).

`--threshold` times the kernels and the population step on one thread and on all threads,
interleaved, over a range of sizes: where threads start to pay is what sets
`kernels.PARALLEL_MIN_BYTES` and `population.PARALLEL_MIN_RUNS`.

Timing on a shared machine is noisy: before each block the script waits (up to --max-wait
seconds) until the cores have been nearly idle for half a second, and it prints the idle
fraction it saw. Numbers in docs/performance.md come from this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def cpu_busy(interval: float = 0.5) -> float:
    """Fraction of CPU time not idle over `interval` seconds (Linux /proc/stat; 0 elsewhere)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    try:
        t0, i0 = read()
        time.sleep(interval)
        t1, i1 = read()
    except OSError:
        return 0.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_wait: float, threshold: float = 0.08) -> float:
    start = time.time()
    busy = cpu_busy()
    while busy > threshold and time.time() - start < max_wait:
        busy = cpu_busy()
    return busy


def blocks(fn, *, repeats: int, per_block: int, max_wait: float) -> tuple[float, float, float]:
    """(min, median, worst idle-wait busy fraction) of per-call seconds over blocks."""
    fn()
    fn()
    times, worst = [], 0.0
    for _ in range(repeats):
        worst = max(worst, wait_quiet(max_wait))
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        times.append((time.perf_counter() - t0) / per_block)
    return float(np.min(times)), float(np.median(times)), worst


def paper_tasks(rng):
    from metarep.families.problem import make_problem, sample_tasks
    problem = make_problem(50, 5, task_cov=np.arange(1.0, 6.0), noise_std=2.0, rng=rng)
    return problem, sample_tasks(problem, 5000, 20, 10, rng)


def time_backend(name: str, tasks, params, args) -> None:
    from metarep.compute import kernels
    from metarep.methods.anil import anil_gradient
    from metarep.methods.fo_anil import fo_anil_gradient
    from metarep.methods.fo_maml import fo_maml_gradient
    from metarep.methods.inner import meta_gradient
    with kernels.use(name):
        _time_backend(name, tasks, params, args, anil_gradient, fo_anil_gradient, fo_maml_gradient, meta_gradient)


def _time_backend(name, tasks, params, args, anil_gradient, fo_anil_gradient, fo_maml_gradient, meta_gradient):
    from metarep.compute import kernels
    rng = np.random.default_rng(1)
    N, d = tasks.n_tasks, tasks.d
    theta = rng.standard_normal((N, d))
    t0 = time.perf_counter()
    kernels.prediction_gradient(tasks.X_in[:2], theta[:2], tasks.y_in[:2])
    first = time.perf_counter() - t0
    mb_in = (tasks.X_in.nbytes + tasks.y_in.nbytes) / 1e6
    mb_out = (tasks.X_out.nbytes + tasks.y_out.nbytes) / 1e6
    for label, X, y, mb in (("X_in", tasks.X_in, tasks.y_in, mb_in), ("X_out", tasks.X_out, tasks.y_out, mb_out)):
        lo, med, busy = blocks(lambda X=X, y=y: kernels.prediction_gradient(X, theta, y), repeats=args.repeats,
                               per_block=10, max_wait=args.max_wait)
        print(f"  {name:5s} kernel {label:5s}: min {lo * 1e3:6.2f} ms, median {med * 1e3:6.2f} ms "
              f"({mb / 1e3 / lo:5.1f} GB/s at the min; busy before blocks <= {busy:.2f})")
    time_one_step_sums(name, tasks, params, args)
    total = tasks.nbytes / 1e6
    def fo_maml_general(params, tasks, alpha):
        return meta_gradient(params, tasks, alpha=alpha, adapt_B=True, exact=False)

    for label, gradient in (("fo_anil_gradient", fo_anil_gradient), ("anil_gradient", anil_gradient),
                            ("fo_maml_gradient", fo_maml_gradient), ("fo_maml, general loop", fo_maml_general)):
        with kernels.step_threads():               # as the training loop runs it
            lo, med, busy = blocks(lambda g=gradient: g(params, tasks, alpha=0.1), repeats=args.repeats,
                                   per_block=10, max_wait=args.max_wait)
        print(f"  {name:5s} {label}: min {lo * 1e3:6.2f} ms, median {med * 1e3:6.2f} ms per step "
              f"({total / 1e3 / lo:5.1f} GB/s effective over {total:.1f} MB; busy <= {busy:.2f})")
    print(f"  {name:5s} first kernel call {first:.2f} s")


def time_one_step_sums(name: str, tasks, params, args) -> None:
    """The task sums of one-inner-step FO-ANIL and exact ANIL: the NumPy composition, and (numba
    backend) the fused pass."""
    from metarep.compute import kernels
    from metarep.linear import one_step
    B, w = params
    P = B @ B.T
    data = (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out, B @ w, -0.1 * P)
    paths = [("composed", one_step.numpy_one_step_sums)]
    if name == "numba" and kernels.compiled_available():
        paths.append(("fused", one_step.numba_one_step_sums))
    with kernels.step_threads():
        for label, fn in paths:
            for method, extra in (("FO-ANIL", ()), ("ANIL", (P,))):
                lo, med, busy = blocks(lambda fn=fn, extra=extra: fn(*data, *extra), repeats=args.repeats,
                                       per_block=10, max_wait=args.max_wait)
                print(f"  {name:5s} {method:7s} task sums, {label:8s}: min {lo * 1e3:6.2f} ms, "
                      f"median {med * 1e3:6.2f} ms (busy <= {busy:.2f})")


def time_population(args) -> None:
    from metarep.linear.params import Params
    from metarep.linear.population import population_step
    from metarep.families.problem import make_problem
    rng = np.random.default_rng(2)
    problem = make_problem(50, 5, task_cov=np.arange(1.0, 6.0), noise_std=2.0, rng=rng)
    S = args.batch
    B0 = rng.standard_normal((S, 50, 50)) / np.sqrt(50)
    kw = {"alpha": 0.1, "beta": 0.05, "m_in": 20}
    state = {"p": Params(B0[0].copy(), np.zeros(50))}

    def one():
        state["p"], _ = population_step(state["p"], problem, **kw)

    lo1, med1, busy1 = blocks(one, repeats=args.repeats, per_block=2000, max_wait=args.max_wait)
    state["p"] = Params(B0.copy(), np.zeros((S, 50)))
    t0 = time.perf_counter()
    one()
    first = time.perf_counter() - t0
    loS, medS, busyS = blocks(one, repeats=args.repeats, per_block=max(5, 2000 // S),
                              max_wait=args.max_wait)
    print(f"  population, one run: min {lo1 * 1e6:6.1f} us/step (median {med1 * 1e6:6.1f}); "
          f"1e5 steps in {lo1 * 1e5:5.2f} s (busy <= {busy1:.2f})")
    print(f"  population, {S} runs batched: min {loS * 1e6:7.1f} us/step = {loS / S * 1e6:5.2f} us per run-step "
          f"(median {medS / S * 1e6:5.2f}); throughput {lo1 * S / loS:4.1f}x one run at a time "
          f"(first batched call {first:.2f} s; busy <= {busyS:.2f})")


def interleaved(fns: dict, *, repeats: int, min_block: float = 0.05) -> dict:
    """Median seconds per call of each function, timed in interleaved blocks."""
    per = {}
    for key, fn in fns.items():
        fn()
        t0 = time.perf_counter()
        fn()
        per[key] = max(1, int(min_block / max(time.perf_counter() - t0, 1e-7)))
    times: dict = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(per[key]):
                fn()
            times[key].append((time.perf_counter() - t0) / per[key])
    return {key: float(np.median(v)) for key, v in times.items()}


def time_thresholds(args) -> None:
    """One thread against `threads.count()` threads (the size thresholds switched off), by size."""
    from metarep.compute import kernels, threads
    from metarep.linear import one_step, population
    from metarep.linear.params import Params
    from metarep.linear.population import population_step
    from metarep.families.problem import make_problem, sample_tasks
    kernels.PARALLEL_MIN_BYTES, population.PARALLEL_MIN_RUNS = 0, 1
    # every launch on all threads, whatever else the machine runs (threads.launch_count)
    os.environ[threads.ENV_VAR] = str(threads.available())
    rng = np.random.default_rng(3)
    print(f"  one thread vs {threads.count()} threads (median of {args.repeats} interleaved blocks; "
          f"load average {os.getloadavg()[0]:.2f})")
    for d, m in ((20, 10), (50, 20)):
        problem = make_problem(d, 3, rng=rng)
        for N in (16, 64, 256, 1024, 4096):
            t = sample_tasks(problem, N, m, m, rng)
            theta, M = rng.standard_normal(d) / d, -0.1 * np.eye(d)

            def sums(t=t, theta=theta, M=M):
                with kernels.use("numba"):
                    one_step.one_step_sums(t.X_in, t.y_in, t.X_out, t.y_out, theta, M)

            def one(fn=sums):
                with threads.limited(1):
                    fn()
            r = interleaved({"1": one, "all": sums}, repeats=args.repeats)
            nbytes = t.X_in.nbytes + t.X_out.nbytes
            print(f"  one-step sums d={d} m={m} N={N:5d} ({nbytes / 1e6:6.2f} MB): 1 thread {r['1'] * 1e6:8.1f} us, "
                  f"all {r['all'] * 1e6:8.1f} us, ratio {r['all'] / r['1']:.2f}")
    problem = make_problem(50, 5, rng=rng)
    for S in (2, 4, 8, 16, 32, 64):
        p = Params(rng.standard_normal((S, 50, 50)) / 7, np.zeros((S, 50)))

        def step(p=p):
            population_step(p, problem, alpha=0.1, beta=0.05, m_in=20)

        def step1(fn=step):
            with threads.limited(1):
                fn()
        r = interleaved({"1": step1, "all": step}, repeats=args.repeats)
        print(f"  population d=k'=50 S={S:3d}: 1 thread {r['1'] * 1e6:8.1f} us, all {r['all'] * 1e6:8.1f} us, "
              f"ratio {r['all'] / r['1']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=["numba", "numpy"],
                        help="kernel backend(s) to time (default: the active one)")
    parser.add_argument("--repeats", type=int, default=7, help="blocks per measurement")
    parser.add_argument("--batch", type=int, default=64, help="runs in the batched population step")
    parser.add_argument("--max-wait", type=float, default=60.0, help="seconds to wait for idle cores per block")
    parser.add_argument("--skip-population", action="store_true")
    parser.add_argument("--skip-step", action="store_true")
    parser.add_argument("--threshold", action="store_true",
                        help="time one thread against all threads by problem size (sets the parallel thresholds)")
    parser.add_argument("--retain-memory", action="store_true",
                        help="call metarep.compute.kernels.retain_freed_memory() first (glibc allocator setting)")
    args = parser.parse_args()

    from metarep.compute import kernels
    if args.retain_memory:
        print(f"retain_freed_memory(): {kernels.retain_freed_memory()}")
    from metarep.linear.params import Params
    print(f"python {platform.python_version()}, numpy {np.__version__}, cores {os.cpu_count()}, "
          f"METAREP_KERNEL={os.environ.get('METAREP_KERNEL', '')!r}, active backend {kernels.backend()}")
    if not args.skip_step:
        rng = np.random.default_rng(0)
        _, tasks = paper_tasks(rng)
        params = Params(rng.standard_normal((50, 50)) / np.sqrt(50), 0.1 * rng.standard_normal(50))
        for name in args.backend or [kernels.backend()]:
            time_backend(name, tasks, params, args)
        del tasks
    if not args.skip_population:
        time_population(args)
    if args.threshold:
        time_thresholds(args)


if __name__ == "__main__":
    main()
