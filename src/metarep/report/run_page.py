"""The page of one run directory: what ran and how it ended, the final metrics, the test
excess risk, the theory's prediction, the figure and the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metarep.report.page import ReportError, files_section, finish, image, table
from metarep.storage.results import PM
from metarep.storage.tables import fmt

FILES = ("config.toml", "metrics.csv", "params.npz", "summary.json", "metrics.png", "checkpoint.npz")
FINAL = ("loss", "align_norm", "sigma_min", "perp_norm", "mean_norm", "lambda_rel_err")


def read_summary(directory: Path) -> dict | None:
    """summary.json, None when the run has none; ReportError when it is unreadable."""
    path = directory / "summary.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ReportError(f"{str(path)!r} is not readable JSON: {err}") from None


def _status(directory: Path, summary: dict | None) -> list[str]:
    if summary is None:
        state = "interrupted (it has a checkpoint)" if (directory / "checkpoint.npz").exists() else "not finished"
        return [f"The run is {state}: continue it with `metarep run --resume {directory}`.", ""]
    method, regime = summary.get("method"), summary.get("regime")
    if summary.get("status") == "completed":
        out = [f"**{method}** ({regime} tasks): completed {summary.get('steps')} steps.", ""]
    else:
        out = [f"**{method}** ({regime} tasks): {summary.get('status')}. {summary.get('message', '')}", ""]
    if summary.get("infinite_tasks"):
        out += [f"Infinite tasks: {summary['infinite_tasks']}.", ""]
    return out


def _final_rows(final: dict[str, Any]) -> list[list[Any]]:
    # summary.json writes null where a number has no value (the loss of a direct fit)
    rows: list[list[Any]] = [[key, "none" if final[key] is None else final[key]] for key in FINAL if key in final]
    if "rank" in final:
        rows.append([f"rank (singular values above {final.get('rank_rel_tol', '')} x the largest)", final["rank"]])
    if final.get("singular_values"):
        rows.append(["singular values of B", ", ".join(fmt(v, 3) for v in final["singular_values"])])
    return rows


def _test_rows(test: dict[str, Any]) -> list[list[Any]]:
    rule = test.get("adapt") or ""
    if "mse" in test:  # held-out real tasks
        steps = f", {test['adapt_steps']} step(s) of size {fmt(test.get('alpha'))}" if rule == "gradient" else ""
        return [["test MSE (held-out tasks)", f"{fmt(test.get('mse'))} {PM} {fmt(test.get('mse_se'), 2)}"],
                ["adaptation", rule + steps],
                ["held-out tasks x adaptation rows", f"{test.get('tasks')} x {test.get('m_test')} "
                                                     f"({test.get('tasks_skipped')} too small, skipped)"]]
    rows: list[list[Any]] = [["test excess risk",
                              f"{fmt(test.get('excess_risk'))} {PM} {fmt(test.get('excess_risk_se'), 2)}"]]
    if test.get("excess_risk_expected") is not None:
        rows.append(["expected (closed form, MATH 6)", test["excess_risk_expected"]])
    steps = f", {test['adapt_steps']} step(s) of size {fmt(test.get('alpha'))}" if rule == "gradient" else ""
    rows += [["adaptation", rule + steps], ["test tasks x samples", f"{test.get('tasks')} x {test.get('m_test')}"]]
    return rows


def _theory_rows(theory: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    if theory.get("lambda_star"):
        rows.append(["eigenvalues of Lambda*", ", ".join(fmt(v) for v in theory["lambda_star"])])
    if theory.get("lemma2_rate") is not None:
        rows.append(["Lemma 2 rate", theory["lemma2_rate"]])
    return rows


def results_sections(summary: dict) -> list[str]:
    """Final metrics, test and theory tables of a summary."""
    out = [f"## Final metrics (step {summary.get('steps')})", "",
           table(["quantity", "value"], _final_rows(summary.get("final") or {})), ""]
    if summary.get("test"):
        out += ["## Test (new tasks, MATH 6)", "", table(["quantity", "value"], _test_rows(summary["test"])), ""]
    theory = _theory_rows(summary.get("theory") or {})
    if theory:
        out += ["## Theory (MATH 5)", "", table(["quantity", "value"], theory), ""]
    return out


def run_page(directory: Path) -> str:
    summary = read_summary(directory)
    out = [f"# Run report: {directory.resolve().name}", "", *_status(directory, summary)]
    if summary is not None:
        out += results_sections(summary)
    if (directory / "metrics.png").exists():
        out += ["## Figure", "", image("tracked norms and training loss", "metrics.png"), ""]
    if (directory / "config.toml").exists():
        out += ["## Config", "", "```toml", (directory / "config.toml").read_text().strip(), "```", ""]
    out += files_section(directory, [directory / n for n in FILES])
    return finish(out)
