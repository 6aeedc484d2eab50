"""`metarep reproduce nonlinear` on a tiny grid: what it writes, which lam it keeps, how it fits
slopes and correlations, and that it resumes from kept results."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

pytest.importorskip("torch")

from metarep.reproduce import nonlinear  # noqa: E402
from metarep.reproduce import nonlinear_verdicts as nv  # noqa: E402
from metarep.running.pool import KeptFolder  # noqa: E402

BASE = """[problem]
d = 4
k = 2
task_cov = [0.5, 1.5]
[model]
arch = "mlp"
width = 4
[method]
name = "fo-anil"
[train]
tasks = 12
tasks_per_step = 6
m_in = 4
m_out = 4
alpha = 0.2
beta = 0.2
steps = 6
log_every = 6
[test]
m_test = 8
tasks = 40
adapt = "tuned"
tune_rules = ["gradient", "ridge"]
tune_steps = [1, 3]
tune_ridge = [0.1]
validation_tasks = 20
[study]
seeds = 2
teachers = ["linear", "relu"]
nets = [{ layers = 2, bias = false }, { layers = 3, bias = true }]
methods = ["fo-anil", "burer-monteiro", "oracle"]
score_at = [3]
skip = [{ method = "burer-monteiro", teacher = "relu" }]
method_config = { "burer-monteiro" = { train = { beta = 0.1 } } }
reference = { method = "random-effects", teachers = ["linear"] }
compare = [{ a = "fo-anil", b = "oracle" }, { a = "random-effects", b = "fo-anil" }]
[study.lam]
method = "burer-monteiro"
values = [0.0, 0.01]
[study.controls]
method = "fo-anil"
nets = [["identity", "linear"], ["relu", "linear"]]
m_in = [3, 30]
batch_tasks = 4
steps = 8
points = 5
seeds = 2
late_from = 0.25
population = true
"""


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _experiments(tmp_path):
    (tmp_path / "exp" / "nonlinear").mkdir(parents=True)
    (tmp_path / "exp" / "nonlinear" / "base.toml").write_text(BASE)
    return tmp_path / "exp"


def test_tiny_grid(tmp_path):
    nonlinear.run(tmp_path / "out", workers=1, experiments=_experiments(tmp_path), echo=lambda msg: None)
    rows = _read(tmp_path / "out" / "nonlinear.csv")
    cells = {(r["teacher"], r["net"], r["method"]): r for r in rows}
    assert ("linear", "linear model", "random-effects") in cells
    assert ("relu", "linear model", "random-effects") not in cells
    assert all(r["completed"] == "2" for r in rows)
    for teacher in ("linear", "relu"):
        for net in ("2 layers", "3 layers + bias"):
            assert float(cells[(teacher, net, "oracle")]["own"]) < float(cells[(teacher, net, "fo-anil")]["own"])
            assert cells[(teacher, net, "fo-anil")]["settling_steps"] == "3 / 6"
    seeds = _read(tmp_path / "out" / "nonlinear_seeds.csv")
    assert len([s for s in seeds if s["method"] == "burer-monteiro"]) == 2 * 2 * 2   # every lam, linear teacher only
    assert not any(s["method"] == "burer-monteiro" and s["teacher"] == "relu" for s in seeds)
    verdicts = _read(tmp_path / "out" / "nonlinear_verdicts.csv")
    questions = {v["question"] for v in verdicts}
    assert {"fo-anil lower than oracle", "random-effects lower than fo-anil", "R^2 of the teacher's features rises",
            "perp_ratio falls (log end / start)", "perp_ratio lower at m_in = 3 than at 30 (log ratio)"} <= questions
    assert all(v["verdict"] in ("holds", "does not hold", "not decided") for v in verdicts)
    slopes = _read(tmp_path / "out" / "nonlinear_slopes.csv")
    assert {(s["net"], s["m_in"], s["measure"]) for s in slopes} == {
        (f"{a} net", m, key) for a in ("identity", "relu") for m in ("3", "30")
        for key in ("perp_ratio^2", "grad_perp_share")}
    assert {r["runs"] for r in _read(tmp_path / "out" / "nonlinear_risk.csv")} == {
        "table: trained methods x seeds", "controls: m_in x seeds"}
    curves = _read(tmp_path / "out" / "nonlinear_curves.csv")
    assert {c["m_in"] for c in curves} == {"3", "30"} and {c["step"] for c in curves} >= {"0", "8"}
    population = [c for c in curves if c["part"] == "population"]
    identity = [c for c in curves if c["part"] == "control" and c["activation"] == "identity"]
    assert len(population) == len(identity) > 0 and all(float(c["perp_ratio"]) > 0 for c in population)
    # the population update starts where the identity network's control of the same seed starts
    start = {(c["part"], c["activation"], c["m_in"], c["seed"]): c["perp_ratio"] for c in curves if c["step"] == "0"}
    assert all(start[("population", "identity", m, s)] == pytest.approx(start[("control", "identity", m, s)])
               for m in ("3", "30") for s in ("0", "1"))
    assert {"perp_ratio lower with 4 fresh tasks a step than under the population update (log ratio)",
            "perp_ratio lower at m_in = 3 than at 30 (log ratio)"} <= {
        v["question"] for v in verdicts if v["net"] == "linear model, population"}
    page = (tmp_path / "out" / "nonlinear.md").read_text()
    assert "burer-monteiro (lam " in page and "### Controls: late slopes" in page
    assert (tmp_path / "out" / "nonlinear.png").stat().st_size > 1000
    assert not (tmp_path / "out" / ".kept-nonlinear").exists()


def test_a_kept_result_is_reused(tmp_path, monkeypatch):
    experiments = _experiments(tmp_path)
    data, study = nonlinear.load(quick=False, experiments=experiments)
    jobs = nonlinear.table_jobs(data, study) + nonlinear.control_jobs(data, study) + nonlinear.population_jobs(
        data, study)
    kept = KeptFolder(tmp_path / "out" / ".kept-nonlinear")
    fake = nonlinear.run_job(jobs[0])
    fake["cpu_s"] = 12345.0
    kept.put(0, jobs[0], fake)
    ran = []
    real = nonlinear.run_job
    monkeypatch.setattr(nonlinear, "run_job", lambda job: ran.append(job) or real(job))
    nonlinear.run(tmp_path / "out", workers=1, experiments=experiments, echo=lambda msg: None)
    assert len(ran) == len(jobs) - 1
    assert "12345.0" in (tmp_path / "out" / "nonlinear_seeds.csv").read_text()


def _run(method, seed, val, lam, teacher="linear", net="2 layers"):
    return {"part": "table", "teacher": teacher, "net": net, "method": method, "seed": seed, "lam": lam,
            "status": "completed", "tuned": val + 1, "tuned_validation": val}


def test_choose_lam_keeps_the_lowest_validation_risk_per_seed():
    failed = {**_run("bm", 2, 0.1, 0.1), "status": "diverged"}
    runs = [_run("bm", 0, 0.5, 0.0), _run("bm", 0, 0.3, 0.1), _run("bm", 1, 0.2, 0.0), _run("bm", 1, 0.4, 0.1),
            {**_run("bm", 2, 0.9, 0.0), "status": "diverged"}, failed, _run("bm", 3, 0.1, 0.0),
            {**_run("bm", 3, 0.01, 0.1), "status": "diverged"}, _run("fo-anil", 0, 0.9, None)]
    kept = nv.choose_lam(runs, "bm")
    assert sorted((r["method"], r["seed"], r["lam"]) for r in kept) == [
        ("bm", 0, 0.1), ("bm", 1, 0.0), ("bm", 2, 0.0), ("bm", 3, 0.0), ("fo-anil", 0, None)]


def test_late_slope_of_a_power_law():
    curve = [{"step": 0, "perp_ratio": 7.0}] + [{"step": s, "perp_ratio": 3.0 * s ** -0.5} for s in (1, 10, 100, 1000)]
    assert nv._late_slope(curve, "perp_ratio", 10, square=True) == pytest.approx(-1.0, abs=1e-12)
    assert nv._late_slope(curve, "perp_ratio", 10, square=False) == pytest.approx(-0.5, abs=1e-12)


def test_correlation_interval_matches_fishers_z():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50)
    y = x + rng.standard_normal(50)
    out = nv.correlation(x, y)
    r = np.corrcoef(x, y)[0, 1]
    half = 1.959963984540054 / math.sqrt(47)
    assert out["r"] == pytest.approx(r) and out["low"] == pytest.approx(math.tanh(math.atanh(r) - half))
    assert out["verdict"] == "holds"
    assert nv.correlation(x, -y)["verdict"] == "does not hold"
    assert nv.correlation(x[:3], y[:3])["verdict"] == "not decided"


def test_correlation_interval_covers_the_true_rho_95_percent_of_the_time():
    """Monte Carlo: bivariate normal samples of n = 10 with rho = 0.6; the interval must cover
    rho in 95% of 4000 draws (binomial s.e. 0.35%: a coverage outside [0.935, 0.965] fails)."""
    rng = np.random.default_rng(1)
    rho, n, draws = 0.6, 10, 4000
    cov = np.array([[1.0, rho], [rho, 1.0]])
    hits = 0
    for _ in range(draws):
        x, y = rng.multivariate_normal([0.0, 0.0], cov, size=n).T
        out = nv.correlation(x, y)
        hits += out["low"] <= rho <= out["high"]
    assert 0.935 <= hits / draws <= 0.965


def test_population_verdicts_pair_each_seed_with_its_fresh_task_control():
    from metarep.reproduce.nonlinear_verdicts import population_verdicts

    def run(part, m_in, seed, end, activation="identity"):
        return {"part": part, "status": "completed", "m_in": m_in, "seed": seed, "activation": activation,
                "teacher": "linear", "perp_ratio": end, "curve": [{"step": 0, "perp_ratio": 2.0},
                                                                  {"step": 10, "perp_ratio": end}]}

    pop = [run("population", m, s, end=(0.1 if m == 5 else 1.0) * (1 + 0.01 * s)) for m in (5, 100) for s in range(5)]
    fresh = [run("control", m, s, end=0.5 * (1 + 0.02 * s)) for m in (5, 100) for s in range(5)]
    fresh += [run("control", m, s, end=99.0, activation="relu") for m in (5, 100) for s in range(5)]
    rows, table = population_verdicts(pop, fresh, {"batch_tasks": 50})
    by = {(r["question"], r["m_in"]): r for r in rows}
    gap = by[("perp_ratio lower with 50 fresh tasks a step than under the population update (log ratio)", 100)]
    expected = np.mean([np.log(0.5 * (1 + 0.02 * s) / (1 + 0.01 * s)) for s in range(5)])
    assert gap["mean"] == pytest.approx(expected) and gap["verdict"] == "holds"
    order = by[("perp_ratio lower at m_in = 5 than at 100 (log ratio)", "5 vs 100")]
    assert order["mean"] == pytest.approx(np.log(0.1))
    assert by[("perp_ratio falls (log end / start)", 5)]["verdict"] == "holds"
    assert table[1]["m_in"] == 100 and table[1]["fresh"] == pytest.approx(0.5 * 1.04)
    assert population_verdicts([], fresh, {"batch_tasks": 50}) == ([], [])
