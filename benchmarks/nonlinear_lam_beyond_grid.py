"""Burer-monteiro beyond the top of `metarep reproduce nonlinear`'s lam grid: the two-layer cells
(both teachers, with and without biases, 5 seeds) at extra values of lam, each run exactly as the
reproduction runs it. Prints, per cell and lam, the mean tuned-rule risk on validation and on test
tasks; compare with the grid's values in the reproduction's nonlinear_seeds.csv (columns lam,
tuned_validation, tuned). About 190 s on 2 idle cores for the default 0.3 and 1.0.

    python benchmarks/nonlinear_lam_beyond_grid.py [--lam 0.3 1.0] [--out lam.csv]
"""

from __future__ import annotations

import argparse
import tempfile
from statistics import mean

from metarep.reproduce import nonlinear
from metarep.reproduce.common import write_csv
from metarep.running.pool import resumable_map

COLUMNS = ("teacher", "net", "lam", "seed", "status", "tuned_validation", "tuned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lam", type=float, nargs="+", default=[0.3, 1.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", help="also write every run to this CSV file")
    args = parser.parse_args()
    data, study = nonlinear.load(quick=False)
    study = {**study, "methods": ["burer-monteiro"], "reference": None,
             "lam": {"method": "burer-monteiro", "values": args.lam}}
    jobs = [j for j in nonlinear.table_jobs(data, study) if j["net"] in ("2 layers", "2 layers + bias")]
    with tempfile.TemporaryDirectory() as kept:
        results = resumable_map(nonlinear.run_job, jobs, workers=args.workers, folder=kept,
                                costs=[nonlinear._cost(j) for j in jobs])
    rows = [{**{k: j[k] for k in ("teacher", "net", "lam", "seed")}, **r} for j, r in zip(jobs, results)]
    if args.out:
        write_csv(args.out, rows, COLUMNS)
    print("| teacher | network | lam | tuned risk, validation | tuned risk, test | runs |\n|---|---|---|---|---|---|")
    for cell in sorted({(r["teacher"], r["net"], r["lam"]) for r in rows}):
        ok = [r for r in rows if (r["teacher"], r["net"], r["lam"]) == cell and r["status"] == "completed"]
        print(f"| {cell[0]} | {cell[1]} | {cell[2]} | {mean(r['tuned_validation'] for r in ok):.3f} | "
              f"{mean(r['tuned'] for r in ok):.3f} | {len(ok)} |")


if __name__ == "__main__":
    main()
