"""Run the full step benchmark and keep its report.

    python benchmarks/step_benchmark.py [options of `metarep bench`]

This is `metarep bench` (the paper's setting by default: N = 5000, m_in = 20, m_out = 10,
d = k' = 50, FO-ANIL and exact ANIL, float64 and float32) with one addition: unless `--out` is
given, the report is written to benchmarks/results/step_benchmark.md and the full result,
with every individual time, to benchmarks/results/step_benchmark.json.

Run it on an otherwise idle machine (check `uptime`): other processes on the cores distort the
times, the parallel kernels' most of all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from metarep.bench.cli import bench

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--out" not in args and not any(a.startswith("--out=") for a in args) and "--help" not in args:
        args += ["--out", str(RESULTS / "step_benchmark.md"), "--out", str(RESULTS / "step_benchmark.json")]
    try:
        bench.main(args=args, prog_name="step_benchmark.py", standalone_mode=False)
    except SystemExit as err:  # --help
        return err.code if isinstance(err.code, int) else 0
    except Exception as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
