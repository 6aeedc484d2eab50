"""Time metarep.linear.random_effects.fit_prior at the paper's scale (MATH 7): p = d = 50, N = 5000 tasks
of m = 30 rows, k = 5, sigma^2 = 4, Sigma* = 0.2 diag(1..5); rank k, and full G (EM then
L-BFGS) for a few iteration caps. Prints seconds, E-steps (likelihood evaluations),
log-likelihood (the truth's first) and |G - G*| / |G*|.

    OPENBLAS_NUM_THREADS=1 python benchmarks/random_effects_fit.py [--full-iters 100 1000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from metarep.linear import random_effects as rfx
from metarep.families.problem import make_problem, sample_tasks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full-tols", type=float, nargs="*", default=[1e-7, 1e-8, 1e-9, 1e-12])
    args = parser.parse_args()
    problem = make_problem(50, 5, task_mean=0.0, task_cov=[0.2 * i for i in range(1, 6)], noise_std=2.0,
                           rng=np.random.default_rng(0))
    tasks = sample_tasks(problem, 5000, 15, 15, np.random.default_rng(1))
    start = time.perf_counter()
    stats = rfx.stacked_stats(tasks)
    B = problem.B_star
    truth = rfx.Prior(B @ problem.mu_star, B @ problem.Sigma_star @ B.T, problem.noise_std**2)
    print(f"statistics {time.perf_counter() - start:.1f} s; log-likelihood at the truth {rfx.loglik(truth, stats):.1f}")
    calls = [0]

    def counted(f):
        def call(*a, **k):
            calls[0] += 1
            return f(*a, **k)
        return call

    # count likelihood evaluations: E-steps (rank r) and objective calls (full G); a benchmark
    # script, not library code
    rfx._posterior, rfx._objective = counted(rfx._posterior), counted(rfx._objective)
    new = sample_tasks(problem, 2000, 15, 0, np.random.default_rng(2))
    blups = {}
    for rank, tol in [(5, 1e-9), *((None, t) for t in sorted(args.full_tols, reverse=True))]:
        calls[0] = 0
        start = time.perf_counter()
        prior = rfx.fit_prior(stats, rank=rank, tol=tol, max_iter=1000)
        seconds = time.perf_counter() - start
        error = np.linalg.norm(prior.G - truth.G) / np.linalg.norm(truth.G)
        print(f"rank {rank or 'full'}, tol {tol:g}: {seconds:.1f} s, {calls[0]} evaluations, "
              f"log-likelihood {rfx.loglik(prior, stats):.2f}, |G - G*|/|G*| {error:.3f}, sigma2 {prior.sigma2:.3f}",
              flush=True)
        if rank is None:
            blups[tol] = rfx.posterior_mean(prior, new.X_in, new.y_in)
    reference = blups[min(blups)]
    for tol, blup in blups.items():
        change = np.abs(blup - reference).max() / np.linalg.norm(reference, axis=1).mean()
        print(f"full, tol {tol:g}: BLUPs' largest change from tol {min(blups):g}: {change:.1e} of their mean norm")

if __name__ == "__main__":
    main()
