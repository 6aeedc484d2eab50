"""`metarep reproduce nonlinear` on a tiny grid: what it writes and what it concludes."""

from __future__ import annotations

import csv

import pytest

pytest.importorskip("torch")

from metarep.reproduce import nonlinear  # noqa: E402

BASE = """[problem]
d = 4
k = 2
[model]
arch = "mlp"
width = 4
[train]
tasks = 8
m_in = 4
m_out = 4
alpha = 0.2
beta = 0.2
steps = 3
log_every = 3
[test]
m_test = 8
tasks = 40
adapt = "tuned"
tune_rules = ["gradient", "ridge"]
tune_steps = [1, 3]
tune_ridge = [0.1]
validation_tasks = 20
[study]
teachers = ["relu"]
layers = [2, 3]
methods = ["fo-anil", "oracle"]
seeds = 2
compare = [{ a = "fo-anil", b = "oracle" }]
[study.figure]
method = "fo-anil"
m_in = [3, 30]
steps = 4
batch_tasks = 4
nets = [["relu", "relu"]]
"""


def test_tiny_grid(tmp_path):
    (tmp_path / "exp" / "nonlinear").mkdir(parents=True)
    (tmp_path / "exp" / "nonlinear" / "base.toml").write_text(BASE)
    rows = nonlinear.run(tmp_path / "out", workers=1, experiments=tmp_path / "exp", echo=lambda msg: None)
    assert len(rows) == 4 and all(r["completed"] == 2 for r in rows)
    for layers in (2, 3):
        cell = {r["method"]: r for r in rows if r["layers"] == layers}
        assert cell["oracle"]["excess_risk_mean"] < cell["fo-anil"]["excess_risk_mean"]
        assert cell["oracle"]["perp_norm_mean"] < 1e-12
    page = (tmp_path / "out" / "nonlinear.md").read_text()
    assert "relu teacher, 2 layers, test excess risk under the tuned rule (own default rule): oracle" in page
    # one rule for all (tuned) beside each method's own; the tuned choice includes the own rule, so
    # on validation it can only be as good or better, and on test it is a real number
    assert all(r["tuned_risk_mean"] > 0 and r["tuned_rules"] != "-" for r in rows)
    with open(tmp_path / "out" / "nonlinear_verdicts.csv") as f:
        verdicts = list(csv.DictReader(f))
    assert {(v["layers"], v["rule"]) for v in verdicts} == {(n, r) for n in ("2", "3")
                                                             for r in ("tuned rule", "own rules")}
    assert all(v["verdict"] in ("holds", "does not hold", "not decided") and v["n"] == "2" for v in verdicts)
    assert "is fo-anil lower than oracle? tuned rule" in page
    assert "fo-anil, relu network, relu teacher: perp_norm changes by" in page and "m_in = 30" in page
    with open(tmp_path / "out" / "nonlinear_curves.csv") as f:
        curves = list(csv.DictReader(f))
    assert {c["m_in"] for c in curves} == {"3", "30"} and {c["step"] for c in curves} >= {"0", "4"}
    with open(tmp_path / "out" / "nonlinear_seeds.csv") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert (tmp_path / "out" / "nonlinear.png").stat().st_size > 1000
