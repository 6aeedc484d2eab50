"""What `metarep reproduce nonlinear` concludes from its runs: the table (mean +- s.e. over seeds
under each method's own rule and under the tuned rule), paired verdicts between methods, and the
controls' verdicts on learning, unlearning, its need for finite m_in, its late rate and its
relation to the test risk. Every verdict is computed from the runs (reproduce/verdict.py)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from metarep.methods import get_method
from metarep.reproduce import protocol, verdict
from metarep.reproduce.common import fmt, markdown_table, write_csv

MEASURES = ("perp_ratio", "grad_perp_share", "effective_rank", "r2")


def _trained(run: dict) -> bool:
    """A network trained by an iterative method (its declaration), not a direct fit."""
    return run["net"] != "linear model" and get_method(run["method"], "mlp").iterative


def _ok(run: dict) -> bool:
    return run["status"] == "completed" and run.get("tuned") is not None


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan


def _ms(values, digits: int = 3) -> str:
    m, s = _mean_se(values)
    return f"{fmt(m, digits)} +- {fmt(s, 2)}"


def choose_lam(runs: list[dict], method: str) -> list[dict]:
    """The table's runs with, for `method`, one run per (teacher, net, seed): the lam of lowest
    validation risk under the tuned rule (a failed run is never chosen; where every lam failed,
    the first, so that the cell counts the failure)."""
    best: dict[tuple, dict] = {}
    for r in runs:
        if r["part"] != "table" or r["method"] != method:
            continue
        key = (r["teacher"], r["net"], r["seed"])
        held = best.get(key)
        if held is None or (_ok(r) and (not _ok(held) or r["tuned_validation"] < held["tuned_validation"])):
            best[key] = r
    return [r for r in runs if r["part"] == "table" and r["method"] != method] + list(best.values())


def table_rows(table: list[dict]) -> list[dict]:
    """One row per (teacher, net, method)."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in table:
        cells[(r["teacher"], r["net"], r["method"])].append(r)
    rows = []
    for (teacher, net, method), runs in cells.items():
        ok = [r for r in runs if _ok(r)]
        row = {"teacher": teacher, "net": net, "method": method, "seeds": len(runs), "completed": len(ok),
               "tuned_rules": protocol.chosen([r["tuned_rule"] for r in ok]),
               "lam": protocol.chosen([str(r["lam"]) for r in ok if r.get("lam") is not None])}
        for key in ("own", "tuned", *MEASURES):
            row[key], row[f"{key}_se"] = _mean_se(r.get(key) for r in ok)
        steps = sorted({s["step"] for r in ok for s in r["scored"]})
        row["settling"] = " / ".join(fmt(_mean_se(s.get("tuned_validation") for r in ok for s in r["scored"]
                                                  if s["step"] == step)[0]) for step in steps)
        row["settling_steps"] = " / ".join(str(s) for s in steps)
        rows.append(row)
    return rows


def render_table(rows: list[dict]) -> str:
    return markdown_table(
        ("teacher", "network", "method", "excess risk, tuned rule (chosen)", "excess risk, own rule",
         "perp_ratio", "grad_perp_share", "eff. rank", "R^2", "tuned validation risk at steps", "runs"),
        [(r["teacher"], r["net"], r["method"] + (f" (lam {r['lam']})" if r["lam"] != "-" else ""),
          f"{fmt(r['tuned'])} +- {fmt(r['tuned_se'], 2)} ({r['tuned_rules']})",
          f"{fmt(r['own'])} +- {fmt(r['own_se'], 2)}", fmt(r["perp_ratio"]), fmt(r["grad_perp_share"]),
          fmt(r["effective_rank"]), fmt(r["r2"]),
          f"{r['settling']} ({r['settling_steps']})" if r["settling"] else "-",
          f"{r['completed']}/{r['seeds']}") for r in rows])


def compare(table: list[dict], pairs: list[dict]) -> list[dict]:
    """Paired verdicts on "a is lower than b" per (teacher, net), under both rules; a method of the
    reference model (one net of its own) pairs with every network by seed."""
    by = {(r["teacher"], r["net"], r["method"], r["seed"]): r for r in table if _ok(r)}
    ref_nets = {r["method"]: r["net"] for r in table if r["net"] == "linear model"}
    cells = sorted({(r["teacher"], r["net"]) for r in table if r["net"] != "linear model"})
    out = []
    for teacher, net in cells:
        for pair in pairs:
            a, b = pair["a"], pair["b"]
            net_a, net_b = ref_nets.get(a, net), ref_nets.get(b, net)
            seeds = sorted(s for (t, n, m, s) in by if (t, n, m) == (teacher, net_a, a)
                           and (teacher, net_b, b, s) in by)
            if not seeds:
                continue
            for rule, key in (("tuned rule", "tuned"), ("own rules", "own")):
                v = verdict.paired([by[(teacher, net_a, a, s)][key] - by[(teacher, net_b, b, s)][key] for s in seeds])
                out.append({"question": f"{a} lower than {b}", "teacher": teacher, "net": net, "rule": rule,
                            **v.as_dict()})
    return out


def _late_slope(curve: list[dict], key: str, start: float, square: bool) -> float:
    """Least-squares slope of log(value) (log(value^2) with `square`) against log(step) over the
    logged steps from `start` on."""
    pts = [(float(r["step"]), float(r[key])) for r in curve if r["step"] >= start and r.get(key) is not None]
    pts = [(s, v) for s, v in pts if s > 0 and v > 0 and math.isfinite(v)]
    if len(pts) < 3:
        return math.nan
    x = np.log([s for s, _ in pts])
    y = np.log([v for _, v in pts]) * (2 if square else 1)
    return float(np.polyfit(x, y, 1)[0])


def _first(curve: list[dict], key: str) -> float:
    """The first logged finite value (grad_perp_share is undefined while the head is zero)."""
    for r in curve:
        v = r.get(key)
        if v is not None and math.isfinite(v) and v > 0:
            return v
    return math.nan


def control_verdicts(controls: list[dict], c: dict) -> tuple[list[dict], list[dict]]:
    """(verdict rows, slope rows) of the controls, per (activation, teacher) and m_in."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    for r in controls:
        if r["status"] == "completed":
            cells[(r["activation"], r["teacher"], r["m_in"])].append(r)
    rows, slopes = [], []
    start = c["late_from"] * c["steps"]
    for (act, teacher, m_in), runs in sorted(cells.items()):
        where = {"net": f"{act} net", "teacher": teacher, "m_in": m_in}
        r2 = [r["curve"][-1]["r2"] - r["curve"][0]["r2"] for r in runs]
        rises = verdict.paired(r2, sign=1).as_dict()
        rows.append({"question": "R^2 of the teacher's features rises", **where, **rises})
        for key in ("perp_ratio", "grad_perp_share"):
            d = [math.log(r["curve"][-1][key] / _first(r["curve"], key)) for r in runs]
            rows.append({"question": f"{key} falls (log end / start)", **where, **verdict.paired(d).as_dict()})
            s = [_late_slope(r["curve"], key, start, square=key == "perp_ratio") for r in runs]
            v = verdict.paired(s)
            slopes.append({**where, "measure": f"{key}^2" if key == "perp_ratio" else key, **v.as_dict(),
                           "contains_minus_one": bool(v.low <= -1 <= v.high) if math.isfinite(v.low) else None})
    for act, teacher in sorted({(a, t) for a, t, _ in cells}):
        m_small, m_large = min(c["m_in"]), max(c["m_in"])
        small = {r["seed"]: r for r in cells.get((act, teacher, m_small), [])}
        large = {r["seed"]: r for r in cells.get((act, teacher, m_large), [])}
        for key in ("perp_ratio", "grad_perp_share"):
            d = [math.log(small[s]["curve"][-1][key] / large[s]["curve"][-1][key]) for s in small if s in large]
            rows.append({"question": f"{key} lower at m_in = {m_small} than at {m_large} (log ratio)",
                         "net": f"{act} net", "teacher": teacher, "m_in": f"{m_small} vs {m_large}",
                         **verdict.paired(d).as_dict()})
    return rows, slopes


def population_verdicts(population: list[dict], controls: list[dict], c: dict) -> tuple[list[dict], list[dict]]:
    """(verdict rows, table rows) of the population update against the identity-network control on
    the linear teacher (the same model and start, with c["batch_tasks"] fresh tasks a step), per
    m_in: perp_ratio's fall, its order in m_in, and what the finite batch of tasks adds."""
    pop = _by_m_in(population)
    if not pop:
        return [], []
    fresh = _by_m_in([r for r in controls if r["activation"] == "identity" and r["teacher"] == "linear"])
    net, rows, table = "linear model, population", [], []
    for m_in, runs in sorted(pop.items()):
        where = {"net": net, "teacher": "linear", "m_in": m_in}
        d = [math.log(r["curve"][-1]["perp_ratio"] / r["curve"][0]["perp_ratio"]) for r in runs.values()]
        rows.append({"question": "perp_ratio falls (log end / start)", **where, **verdict.paired(d).as_dict()})
        both = [s for s in runs if s in fresh.get(m_in, {})]
        gap = [math.log(fresh[m_in][s]["perp_ratio"] / runs[s]["perp_ratio"]) for s in both]
        rows.append({"question": f"perp_ratio lower with {c['batch_tasks']} fresh tasks a step than under the "
                                 "population update (log ratio)", **where, **verdict.paired(gap).as_dict()})
        (p, p_se), (f, f_se) = (_mean_se([r["perp_ratio"] for r in runs.values()]),
                                _mean_se([fresh[m_in][s]["perp_ratio"] for s in both]))
        table.append({"m_in": m_in, "population": p, "population_se": p_se, "fresh": f, "fresh_se": f_se})
    small, large = pop[min(pop)], pop[max(pop)]
    d = [math.log(small[s]["perp_ratio"] / large[s]["perp_ratio"]) for s in small if s in large]
    rows.append({"question": f"perp_ratio lower at m_in = {min(pop)} than at {max(pop)} (log ratio)", "net": net,
                 "teacher": "linear", "m_in": f"{min(pop)} vs {max(pop)}", **verdict.paired(d).as_dict()})
    return rows, table


def _by_m_in(runs: list[dict]) -> dict[int, dict[int, dict]]:
    """Completed runs by m_in, then by seed."""
    out: dict[int, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        if r["status"] == "completed":
            out[r["m_in"]][r["seed"]] = r
    return out


def correlation(xs, ys) -> dict:
    """Pearson r with its 95% interval (Fisher's z), and the verdict on r > 0."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n < 4 or x.std() == 0 or y.std() == 0:
        return {"n": n, "r": math.nan, "low": math.nan, "high": math.nan, "verdict": verdict.UNDECIDED}
    r = float(np.corrcoef(x, y)[0, 1])
    z, half = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1.959963984540054 / math.sqrt(n - 3)
    low, high = math.tanh(z - half), math.tanh(z + half)
    word = verdict.HOLDS if low > 0 else verdict.FAILS if high < 0 else verdict.UNDECIDED
    return {"n": n, "r": r, "low": low, "high": high, "verdict": word}


def risk_relation(table: list[dict], controls: list[dict]) -> list[dict]:
    """Does less energy outside span(B*) go with a lower tuned test risk? Pearson r between the log
    of the final grad_perp_share (and perp_ratio) and the tuned risk, across the trained runs of
    each (teacher, net) of the table and across the runs of each control."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in table:
        if _trained(r) and _ok(r):
            groups[("table: trained methods x seeds", r["teacher"], r["net"])].append(r)
    for r in controls:
        if _ok(r):
            groups[("controls: m_in x seeds", r["teacher"], r["net"])].append(r)
    out = []
    for (runs_of, teacher, net), runs in sorted(groups.items()):
        for key in ("grad_perp_share", "perp_ratio"):
            xs = [math.log(r[key]) if r.get(key) and r[key] > 0 else math.nan for r in runs]
            out.append({"runs": runs_of, "teacher": teacher, "net": net, "measure": f"log {key}",
                        **correlation(xs, [r["tuned"] for r in runs])})
    return out


def _sentences(rows: list[dict], columns: tuple[str, ...]) -> list[str]:
    out = []
    for r in rows:
        where = ", ".join(f"{r[c]}" for c in columns if r.get(c) is not None)
        v = verdict.Verdict(r["n"], r["mean"], r["se"], r["low"], r["high"], r["verdict"])
        out.append(f"{where}: {r['question']}? {v.text()}")
    return out


def _order(study: dict):
    """Rows in the study's order: teacher, network (the reference model last), method."""
    nets = [f"{n['layers']} layers{' + bias' if n['bias'] else ''}" for n in study["nets"]] + ["linear model"]
    methods = list(study["methods"]) + [study.get("reference", {}).get("method")]
    return lambda r: (study["teachers"].index(r["teacher"]), nets.index(r["net"]), methods.index(r["method"]))


def write_outputs(out: Path, runs: list[dict], data: dict, study: dict) -> str:
    """Write nonlinear.csv, nonlinear_verdicts.csv, nonlinear_slopes.csv, nonlinear_risk.csv;
    return the page's body (tables and findings)."""
    lam_method = study.get("lam", {}).get("method", "")
    table = choose_lam(runs, lam_method)
    controls = [r for r in runs if r["part"] == "control"]
    rows = sorted(table_rows(table), key=_order(study))
    write_csv(out / "nonlinear.csv", rows)
    compared = compare(table, study.get("compare", []))
    ctrl, slopes = control_verdicts(controls, study["controls"])
    pop, pop_table = population_verdicts([r for r in runs if r["part"] == "population"], controls,
                                         study["controls"])
    relation = risk_relation(table, controls)
    verdict_columns = ("question", "teacher", "net", "m_in", "rule", "n", "mean", "se", "low", "high", "verdict")
    write_csv(out / "nonlinear_verdicts.csv", compared + ctrl + pop, verdict_columns)
    write_csv(out / "nonlinear_slopes.csv", slopes)
    write_csv(out / "nonlinear_risk.csv", relation)
    slope_text = [f"{s['net']}, {s['teacher']} teacher, m_in = {s['m_in']}: late slope of {s['measure']} "
                  f"{fmt(s['mean'])} +- {fmt(s['se'], 2)} (95% CI [{fmt(s['low'])}, {fmt(s['high'])}], {s['n']} seeds)"
                  f"{'; contains -1' if s['contains_minus_one'] else ''}" for s in slopes]
    risk_text = [f"{r['runs']}, {r['teacher']} teacher, {r['net']}: r({r['measure']}, tuned risk) = {fmt(r['r'])} "
                 f"(95% CI [{fmt(r['low'])}, {fmt(r['high'])}], {r['n']} runs): positive {r['verdict']}"
                 for r in relation]
    sections = [
        ("Methods, paired over seeds", _sentences(compared, ("teacher", "net", "rule"))),
        ("Controls: learning and unlearning", _sentences(ctrl, ("net", "teacher", "m_in"))),
        ("Controls: late slopes (Lemma 2, linear model: perp_norm^2 ~ 1/t, slope -1)", slope_text),
        ("The population update against fresh tasks (linear model, linear teacher)",
         _sentences(pop, ("net", "m_in")) + [f"m_in = {r['m_in']}: final perp_ratio {fmt(r['population'])} +- "
                                             f"{fmt(r['population_se'], 2)} under the population update, "
                                             f"{fmt(r['fresh'])} +- {fmt(r['fresh_se'], 2)} on fresh tasks"
                                             for r in pop_table]),
        ("Test risk against unlearning", risk_text)]
    body = "\n\n".join(f"### {title}\n\n" + "\n".join(f"- {s}" for s in lines) for title, lines in sections)
    return (f"## Table\n\nMean +- s.e. over seeds; {lam_method} with its lam chosen per seed on validation "
            f"tasks; the last column: the tuned rule's validation risk at the scored steps.\n\n"
            f"{render_table(rows)}\n## Findings\n\n{body}\n\n![controls](nonlinear.png)\n")
