"""Check every available contender against ``numpy_loop`` on a small problem.

Run as ``python benchmarks/check_contenders.py``.  It

* compares grad_B, grad_w and the loss of every available contender with
  ``numpy_loop`` for both methods, to an absolute tolerance of 1e-10, and
* compares ``numpy_loop``'s exact ANIL gradient with central finite
  differences of the meta-objective, to 1e-6.

Contenders whose framework is not installed are skipped with a note.  Exits
with status 1 on any mismatch.
"""

from __future__ import annotations

import sys

import numpy as np

from metarep.bench.contenders import CONTENDERS, make_numpy_loop

N, M_IN, M_OUT, D, K = 7, 5, 4, 6, 4
ALPHA = 0.3
DTYPE = np.float64
TOL = 1e-10
FD_TOL = 1e-6
FD_EPS = 1e-6


def make_problem(seed: int = 0):
    """Small random multi-task regression problem and a point (B, w)."""
    rng = np.random.default_rng(seed)
    X_in = rng.standard_normal((N, M_IN, D))
    y_in = rng.standard_normal((N, M_IN))
    X_out = rng.standard_normal((N, M_OUT, D))
    y_out = rng.standard_normal((N, M_OUT))
    B = rng.standard_normal((D, K)) / np.sqrt(D)
    w = rng.standard_normal(K)
    return (X_in, y_in, X_out, y_out), B, w


def max_abs_diff(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_finite_differences(data, B, w) -> bool:
    """numpy_loop's exact ANIL gradient vs central differences of its loss."""
    step = make_numpy_loop(*data, ALPHA, "anil", DTYPE)
    gB, gw, _ = step(B, w)

    def loss(B_, w_):
        return float(step(B_, w_)[2])

    fd_B = np.zeros_like(B)
    for idx in np.ndindex(B.shape):
        E = np.zeros_like(B)
        E[idx] = FD_EPS
        fd_B[idx] = (loss(B + E, w) - loss(B - E, w)) / (2 * FD_EPS)
    fd_w = np.zeros_like(w)
    for j in range(w.size):
        e = np.zeros_like(w)
        e[j] = FD_EPS
        fd_w[j] = (loss(B, w + e) - loss(B, w - e)) / (2 * FD_EPS)
    err = max(max_abs_diff(gB, fd_B), max_abs_diff(gw, fd_w))
    ok = err < FD_TOL
    print(f"{'finite differences':<14} {'anil':<8} max|diff| = {err:.2e}  "
          f"{'ok' if ok else 'FAIL'}")
    return ok


def main() -> int:
    data, B, w = make_problem()
    ok = check_finite_differences(data, B, w)
    for method in ("fo-anil", "anil"):
        ref = make_numpy_loop(*data, ALPHA, method, DTYPE)(B, w)
        for name, factory in CONTENDERS.items():
            if name == "numpy_loop":
                continue
            try:
                step = factory(*data, ALPHA, method, DTYPE)
            except ImportError as exc:
                print(f"{name:<14} {method:<8} skipped: {exc}")
                continue
            out = step(B, w)
            err = max(max_abs_diff(o, r) for o, r in zip(out, ref))
            good = err < TOL
            ok &= good
            print(f"{name:<14} {method:<8} max|diff| = {err:.2e}  "
                  f"{'ok' if good else 'FAIL'}")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
