"""`metarep reproduce`: the quick table end to end, the figure and the studies, and the pieces
they rest on (layered experiment files, batched population runs, fits)."""

import csv
import json

import numpy as np
import pytest

from metarep.cli import main
from metarep.config.files import load
from metarep.config.schema import validate
from metarep.engine import run
from metarep.reproduce.common import (
    compose,
    deep_merge,
    log_points,
    population_batch,
    with_seed,
)
from metarep.reproduce.figure1 import late_slope
from quick_reproduce import quick

ROWS = {"fo_anil", "fo_anil_inf_tasks", "fo_anil_inf_samples", "anil", "fo_maml", "burer_monteiro", "moments",
        "oracle", "none", "random_effects", "random_effects_rank_k"}
OPTIONAL_ROWS: set[str] = set()  # rows run only when --rows names them (none today)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_table():
    return 0, quick("table1")


def test_quick_table_writes_everything(quick_table):
    code, out = quick_table
    assert code == 0
    assert {"table1.md", "table1.csv", "table1_seeds.csv", "table1.png", "configs"} <= {p.name for p in out.iterdir()}
    assert "BLUP" in read_csv(out / "table1.csv")[-1]["test_adapt"]      # random effects: no B* at test time
    rows = read_csv(out / "table1.csv")
    assert {r["row"] for r in rows} == ROWS
    assert all(int(r["completed"]) == int(r["seeds"]) == 2 for r in rows)
    assert all(np.isfinite(float(r["excess_risk_mean"])) for r in rows)
    configs = sorted(p.name for p in (out / "configs").glob("*.toml"))
    assert len(configs) == len(ROWS) * 2 and "oracle_seed1.toml" in configs
    text = (out / "table1.md").read_text()
    assert "wall time" in text and "Findings" in text and "0.77 +- 0.01" in text
    # every row says the steps it trained (the quick infinite-task rows train 3000, not the full 100000)
    steps = {r["row"]: int(r["steps"]) for r in rows}
    assert steps["fo_anil_inf_tasks"] == 3000 and steps["fo_anil"] == 150 and steps["oracle"] == 0
    assert "100000" not in text
    # Every row of seed s shares B* and the test tasks: the seeds are written into its config.
    cfg = load(out / "configs" / "fo_maml_seed1.toml")
    assert (cfg.problem.seed, cfg.train.seed, cfg.test.seed) == (1, 1, 1001)


def test_oracle_row_has_the_lowest_risk(quick_table):
    _, out = quick_table
    rows = {r["row"]: r for r in read_csv(out / "table1.csv")}
    oracle = float(rows.pop("oracle")["excess_risk_mean"])
    seeds = [r for r in read_csv(out / "table1_seeds.csv") if r["row"] == "oracle"]
    se = max(float(r["excess_risk_se"]) for r in seeds)
    best_other = min(float(r["excess_risk_mean"]) for r in rows.values())
    assert oracle <= best_other + se


def test_quick_table_findings_match_the_paper_claims(quick_table):
    """Infinite tasks beat infinite samples, FO-ANIL beats Burer-Monteiro at k' = d, and only
    finite m_in unlearns B*_perp: on the quick table's numbers, and in its findings."""
    _, out = quick_table
    rows = {r["row"]: r for r in read_csv(out / "table1.csv")}

    def risk(key):
        return float(rows[key]["excess_risk_mean"])

    assert risk("fo_anil_inf_tasks") < risk("fo_anil_inf_samples")
    assert risk("fo_anil") < risk("burer_monteiro")
    perp = {k: float(r["perp_norm_mean"]) for k, r in rows.items()}
    assert perp["fo_anil_inf_tasks"] < 0.5 * perp["fo_anil_inf_samples"]
    findings = (out / "table1.md").read_text().split("## Findings (measured)")[1]
    assert "is FO-ANIL, inf tasks lower than FO-ANIL, inf tasks + inf samples? Own rules:" in findings
    assert "after 150 vs 3000 training steps" in findings     # the horizon of the finite-vs-infinite finding
    # every comparison carries its interval and a verdict, under both protocols
    for line in (x for x in findings.splitlines() if "Own rules:" in x):
        assert line.count("95% CI [") == 2 and "; tuned rule:" in line
        assert line.count(": holds") + line.count(": does not hold") + line.count(": not decided") == 2


def test_quick_table_scores_every_trained_row_under_both_protocols(quick_table):
    """The own-rule risk is the paper's protocol (a one-step row is scored by one head step);
    the tuned risk is the chosen rule's, chosen on validation tasks, on the same test tasks."""
    _, out = quick_table
    rows = {r["row"]: r for r in read_csv(out / "table1.csv")}
    assert rows["oracle"]["tuned_risk_mean"] == ""
    for key, r in rows.items():
        if key != "oracle":
            assert float(r["tuned_risk_mean"]) > 0 and r["tuned_rules"]
    seeds = [r for r in read_csv(out / "table1_seeds.csv") if r["row"] == "fo_anil_inf_tasks"]
    cfg = load(out / "configs" / "fo_anil_inf_tasks_seed0.toml")
    assert cfg.test.adapt == "tuned" and cfg.test.adapt_steps == 1 and "bayes" not in cfg.test.tune_rules
    _, _, summary = run(cfg)
    tuned = summary["test"]["tuned"]
    assert float(seeds[0]["excess_risk"]) == pytest.approx(tuned["default"]["excess_risk"], rel=1e-9)
    assert tuned["default"]["adapt"] == "gradient" and tuned["default"]["adapt_steps"] == 1
    assert float(seeds[0]["tuned_risk"]) == pytest.approx(tuned["excess_risk"], rel=1e-9)
    # the choice is the best on validation, never worse there than the default rule
    assert tuned["validation"] <= tuned["default"]["validation"]


def test_equal_training_trains_every_iterative_row_the_same_steps(tmp_path):
    code = main(["reproduce", "table1", "--quick", "--seeds", "1", "--steps", "40", "--workers", "1",
                 "--rows", "fo_anil,fo_anil_inf_tasks,oracle", "--out", str(tmp_path)])
    assert code == 0
    rows = {r["row"]: r for r in read_csv(tmp_path / "table1.csv")}
    assert {k: int(r["steps"]) for k, r in rows.items()} == {"fo_anil": 40, "fo_anil_inf_tasks": 40, "oracle": 0}
    text = (tmp_path / "table1.md").read_text()
    assert "--steps 40" in text and "both after 40 training steps" in text
    assert load(tmp_path / "configs" / "fo_anil_inf_tasks_seed0.toml").train.steps == 40


def test_written_config_reruns_the_batched_row(quick_table):
    """A population row is advanced in a batch; its config alone through the runner gives the same entry."""
    _, out = quick_table
    seeds = {(r["row"], r["seed"]): r for r in read_csv(out / "table1_seeds.csv")}
    _, _, summary = run(load(out / "configs" / "fo_anil_inf_tasks_seed1.toml"))
    entry = seeds[("fo_anil_inf_tasks", "1")]
    assert summary["final"]["perp_norm"] == pytest.approx(float(entry["perp_norm"]), rel=1e-7)
    # the row's own rule (one head step): the tuned run's default; the tuned rule's score beside it
    assert summary["test"]["tuned"]["default"]["excess_risk"] == pytest.approx(float(entry["excess_risk"]), rel=1e-7)
    assert summary["test"]["excess_risk"] == pytest.approx(float(entry["tuned_risk"]), rel=1e-7)


def general(seed, **train):
    data = {"problem": {"d": 6, "k": 2, "noise_std": 0.8, "task_mean": [0.5, -0.3],
                        "task_cov": [[1.0, 0.3], [0.3, 0.5]]},
            "model": {"width": 5, "init_scale": 1.5},
            "method": {"name": "fo-anil"},
            "train": {"tasks": "inf", "m_in": 4, "m_out": 4, "alpha": 0.2, "beta": 0.1,
                      "steps": 300, "log_every": 100, **train},
            "test": {"tasks": 200}}
    return validate(with_seed(data, seed))


def test_population_batch_matches_the_runner_seed_by_seed():
    """Different seeds have different B*: the batch rotates each into a common frame and back."""
    configs = [general(0), general(3), general(5, m_in="inf", m_out="inf", alpha=0.1)]
    for (_, state, summary), config in zip(population_batch(configs), configs):
        _, ref_state, ref = run(config)
        np.testing.assert_allclose(state.params.B, ref_state.params.B, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(state.params.w, ref_state.params.w, rtol=1e-9, atol=1e-11)
        assert summary["test"]["excess_risk"] == pytest.approx(ref["test"]["excess_risk"], rel=1e-9)
        assert summary["final"]["lambda_rel_err"] == pytest.approx(ref["final"]["lambda_rel_err"], rel=1e-6)


def test_population_batch_reports_divergence_per_run():
    ok, bad = population_batch([general(0), general(1, beta=50.0)])
    assert ok[1].status == "completed" and ok[2]["test"] is not None
    assert bad[1].status == "diverged" and bad[2]["test"] is None and "beta" in bad[2]["message"]


def test_finite_m_in_unlearns_the_complement_infinite_samples_do_not():
    """Population FO-ANIL from a large component in B*_perp: label noise in the inner step
    (finite m_in) shrinks it; with m_in = inf it stays."""
    data = {"problem": {"d": 10, "k": 2, "noise_std": 1.0, "task_cov": [1.0, 2.0]},
            "model": {"width": 10, "init_scale": 3.0},
            "method": {"name": "fo-anil"},
            "train": {"tasks": "inf", "m_in": 5, "m_out": 5, "alpha": 0.1, "beta": 0.1,
                      "steps": 3000},
            "test": {"tasks": 200}}
    finite, infinite = population_batch([validate(data), validate(deep_merge(data, {"train": {"m_in": "inf",
                                                                                                "m_out": "inf"}}))])
    start = finite[1].history[0]["perp_norm"]
    assert start > 4 and infinite[1].history[0]["perp_norm"] == start
    assert finite[2]["final"]["perp_norm"] < 0.2 * infinite[2]["final"]["perp_norm"]
    assert infinite[2]["final"]["perp_norm"] > 0.9 * start


def test_figure1_quick_writes_png_svg_csv():
    out = quick("figure1")
    for name in ("figure1.png", "figure1.svg", "figure1.csv", "figure1.md"):
        assert (out / name).stat().st_size > 0
    assert (out / "figure1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "figure1.svg").read_text()[:2000]
    rows = read_csv(out / "figure1.csv")
    curves = {r["curve"] for r in rows}
    assert curves == {"fo_anil", "fo_anil_inf_tasks", "fo_anil_inf_samples", "fo_maml", "burer_monteiro"}
    inf = [r for r in rows if r["curve"] == "fo_anil_inf_tasks"]
    assert float(inf[-1]["perp_norm"]) < float(inf[0]["perp_norm"])
    assert float(inf[-1]["align_theory"]) > 0 and float(inf[-1]["perp_lemma2_asymptote"]) > 0
    # the theory is drawn only for the curves it describes (the method declares it)
    maml = [r for r in rows if r["curve"] == "fo_maml"]
    assert all(r["align_theory"] == "" for r in maml)


def test_unknown_row_is_a_user_error(tmp_path, capsys):
    assert main(["reproduce", "table1", "--quick", "--rows", "fo_anil,nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_quick_overrides_follow_their_file(tmp_path):
    """A row's own key beats the base's [quick] key; the row's [quick] beats both."""
    (tmp_path / "base.toml").write_text("[train]\nsteps = 100\n[quick.train]\nsteps = 10\nbeta = 0.5\n")
    (tmp_path / "row.toml").write_text("[row]\nlabel = 'r'\n[train]\nsteps = 1000\nalpha = 0.3\n"
                                       "[quick.train]\nsteps = 30\n")
    (tmp_path / "row2.toml").write_text("[train]\nalpha = 0.2\n")
    full, meta = compose([tmp_path / "base.toml", tmp_path / "row.toml"], quick=False)
    assert full["train"] == {"steps": 1000, "alpha": 0.3} and meta == {"row": {"label": "r"}}
    quick, _ = compose([tmp_path / "base.toml", tmp_path / "row.toml"], quick=True)
    assert quick["train"] == {"steps": 30, "beta": 0.5, "alpha": 0.3}
    quick2, _ = compose([tmp_path / "base.toml", tmp_path / "row2.toml"], quick=True)
    assert quick2["train"] == {"steps": 10, "beta": 0.5, "alpha": 0.2}


def test_seed_mapping_and_log_points():
    data = with_seed({"problem": {"d": 3}}, 4)
    assert data["problem"] == {"d": 3, "seed": 4} and data["train"]["seed"] == 4 and data["test"]["seed"] == 1004
    pts = log_points(100000, 50)
    assert pts[0] == 0 and pts[1] == 1 and pts[-1] == 100000 and pts == sorted(set(pts))
    assert len(pts) <= 52 and log_points(0) == [0]


def test_late_slope_recovers_a_power_law():
    t = np.array(log_points(10000, 60), dtype=float)
    assert late_slope(t, 3.0 / (1 + 0.5 * t)) == pytest.approx(-1, abs=0.01)
    assert late_slope(t, np.full(t.shape, 2.0)) == pytest.approx(0, abs=1e-12)
    assert late_slope(t[1:], t[1:] ** -0.5) == pytest.approx(-0.5, abs=1e-9)


def test_experiment_files_validate():
    """Every shipped table row and study config is a valid config, full and quick."""
    from metarep.reproduce.common import experiments_dir, load_study
    from metarep.reproduce.table1 import load_rows

    for quick_mode in (False, True):
        rows = load_rows(quick=quick_mode)
        assert {r.key for r in rows} == ROWS
        assert not any(r.optional for r in rows)
        if OPTIONAL_ROWS:
            named = load_rows(quick=quick_mode, only=tuple(OPTIONAL_ROWS))
            assert {r.key for r in named} == OPTIONAL_ROWS and all(r.optional for r in named)
        for name in ("tasks", "adapt", "heads", "rates"):
            data, study = load_study(name, quick=quick_mode)
            validate(with_seed(deep_merge(data, {"train": {"tasks": "inf"}}) if name == "adapt" else data, 0))
            assert study
    assert (experiments_dir() / "figure1.toml").exists()
    json.dumps([r.data for r in load_rows(quick=False)])
