"""Units of work the reproduction commands hand to worker processes: each takes a plain dict
(picklable, configs as data) and returns plain numbers."""

from __future__ import annotations

from metarep.config.schema import validate
from metarep.reproduce.common import population_batch, trace

METRICS = ("loss", "align_norm", "sigma_min", "perp_norm", "mean_norm", "lambda_rel_err")


def final_numbers(summary: dict) -> dict:
    """The test risk and final tracked norms of a run summary."""
    f, t = summary["final"], summary["test"] or {}
    return {"excess_risk": t.get("excess_risk"), "excess_risk_se": t.get("excess_risk_se"),
            "perp_norm": f["perp_norm"], "align_norm": f["align_norm"], "mean_norm": f["mean_norm"],
            "lambda_rel_err": f["lambda_rel_err"], "rank": f["rank"]}


def curve(history: list[dict]) -> list[dict]:
    """The tracked metrics of a history (without the singular values)."""
    return [{"step": r["step"], **{k: r.get(k) for k in METRICS}} for r in history]


def run_config_job(job: dict) -> dict:
    """engine.run on job["config"]: its status, test risk and final norms."""
    from metarep.engine import run

    _, _, s = run(validate(job["config"]))
    return {"status": s["status"], **final_numbers(s)}


def trace_job(job: dict) -> dict:
    """Train job["config"] measuring at job["points"], then test it: status, curve, test risk."""
    from metarep.engine import build

    exp = build(validate(job["config"]))
    state = trace(exp, job["points"])
    test = exp.evaluate(state.params) if state.status == "completed" else {}
    return {"status": state.status, "message": state.message, "history": curve(state.history),
            "excess_risk": test.get("excess_risk"), "excess_risk_se": test.get("excess_risk_se")}


def population_job(job: dict) -> list[dict]:
    """A batched exact population run over job["configs"]: per config its final numbers, and its
    curve when job["points"] is given."""
    configs = [validate(c) for c in job["configs"]]
    runs = population_batch(configs, points=job.get("points"), evaluate_test=job.get("test", True))
    out = []
    for _, state, s in runs:
        item = {"status": s["status"], **final_numbers(s)}
        if job.get("points") is not None:
            item["history"] = curve(state.history)
        out.append(item)
    return out
