"""What each study concludes on its `--quick` output (the conclusions its page states, checked
on the numbers it wrote), and the resumable job map the long studies use."""

import json

import numpy as np
import pytest

from metarep.running.pool import finished, job_key, resumable_map
from quick_reproduce import quick, read_csv, summary


def test_tasks_finite_n_plateaus_above_the_infinite_task_curve():
    out = quick("tasks")
    rows = {r["N"]: r for r in read_csv(out / "tasks.csv")}
    s = summary("tasks")
    finite = [r for key, r in rows.items() if key.isdigit()]
    assert len(finite) == 3 and "inf" in rows and "oracle" in rows
    assert s["settled_N"], "at least one N settles within the quick horizon"
    for r in finite:
        assert int(r["completed"]) == int(r["seeds"]) == 2
        # every finite-task curve ends above the infinite-task one at the same step, and left it at some step
        assert float(r["perp_final_mean"]) > float(r["inf_perp_at_T"]) > 0
        assert 0 < float(r["t_depart_median"]) < int(r["steps"])
        assert (r["settled"] == "True") == (float(r["settle_change_max"]) < s["settle_tol"])
    assert s["all_above_infinite"] is True
    # more tasks, lower plateau: the fitted exponent is negative, its standard error smaller than it
    fit = s["plateau_fit"]
    assert fit["exponent"] < 0 and 0 < fit["exponent_se"] < abs(fit["exponent"])
    settled = sorted((int(r["N"]), float(r["perp_final_mean"])) for r in finite if r["settled"] == "True")
    assert all(a[1] > b[1] for a, b in zip(settled, settled[1:]))
    # the infinite-task run beats every finite N at test time, and the oracle beats it
    assert float(rows["oracle"]["excess_risk_mean"]) < float(rows["inf"]["excess_risk_mean"])
    assert all(float(r["excess_risk_mean"]) > float(r["inf_excess_risk_at_T"]) for r in finite)
    curves = read_csv(out / "tasks_curves.csv")
    assert {c["N"] for c in curves} == set(rows) - {"oracle"}


def test_adapt_more_steps_help_the_unlearned_model_and_diverge_on_the_other():
    s = summary("adapt")
    models, oracle = s["models"], s["references"]["oracle"]
    assert set(models) == {"fo_anil_inf_tasks", "fo_anil_inf_samples", "fo_anil"}
    unlearned, kept = models["fo_anil_inf_tasks"], models["fo_anil_inf_samples"]
    # with B*_perp unlearned, the step count chosen on validation tasks beats one step on the test tasks
    assert unlearned["chosen_steps"] != "1" and unlearned["chosen_steps_risk"] < unlearned["one_step"]
    assert unlearned["steps_vs_one"]["mean"] < 0 and unlearned["steps_vs_one"]["verdict"] in ("holds", "not decided")
    # with it kept, 50 steps of size alpha blow up
    assert kept["most_steps_risk"] > 100 * kept["one_step"]
    assert all(oracle < m["test_grid_best_steps_risk"] for m in models.values())
    rows = read_csv(quick("adapt") / "adapt.csv")
    assert {r["rule"] for r in rows} == {"gradient", "ridge", "lstsq", "reference"}


def test_adapt_chooses_on_validation_tasks_not_on_test_tasks():
    """Each seed's choice is the lowest validation risk of its grid, and the reported risk is
    that choice's test risk (not the test grid's best)."""
    from metarep.reproduce.studies import adapt

    seeds = read_csv(quick("adapt") / "adapt_seeds.csv")
    assert len(seeds) == 3 * 2 and all(r["status"] == "completed" for r in seeds)
    assert all(float(r["chosen_steps_validation"]) > 0 for r in seeds)
    flat = [{"model": "m", "seed": 0, "status": "completed", "perp_norm": 1.0, "rule": rule, "param": param,
             "validation": val, "excess_risk": test}
            for rule, param, val, test in (("gradient", 1, 2.0, 1.5), ("gradient", 5, 1.0, 3.0),
                                           ("ridge", 0.1, 4.0, 0.5), ("lstsq", None, 3.0, 9.0))]
    d = adapt.Design({}, [0], [{"key": "m"}], [], [], 10)
    (choice,) = adapt.choices(d, flat)
    assert choice["chosen_steps"] == 5 and choice["chosen_steps_risk"] == 3.0 and choice["one_step"] == 1.5
    assert choice["chosen_closed_form"] == "least squares" and choice["chosen_closed_form_risk"] == 9.0


def test_heads_limits_hold_beyond_the_assumptions():
    s = summary("heads")
    variants = s["variants"]
    assert set(variants) == {"diag", "mean", "full", "both"}
    for key, v in variants.items():
        assert v["completed"] == v["seeds"] == 2
        assert v["lambda_rel_err"] < s["lambda_tol"], key          # Lambda_t -> Lambda*(Sigma*)
        assert v["perp_decreasing_after_100"] is True, key
        assert v["perp_norm_final"] < 0.5 * v["perp_norm_initial"], key
        assert v["mean_norm_final"] < 1e-2 * max(v["mean_norm_initial"], 1e-300) or v["mean_norm_initial"] == 0
    # Lambda* is Sigma*'s, not that of the second moment M* = Sigma* + mu* mu*^T
    for key in ("mean", "both"):
        assert variants[key]["lambda_rel_err_mstar"] > 2 * s["lambda_tol"]


def test_rates_follow_lemma2_exponents_with_a_smaller_constant():
    s = summary("rates")
    assert s["points"] == 8
    assert -1.1 < s["slope_median"] < -0.7                       # 1/t decay of perp_norm^2
    assert s["fit"]["alpha"] == pytest.approx(-2, abs=0.2)
    assert s["fit"]["beta"] == pytest.approx(-1, abs=0.2)
    assert s["fit"]["m_in"] == pytest.approx(1, abs=0.2)
    # the measured constant sits well below Lemma 2's, near the one the perp update suggests
    assert s["ratio_max"] < 1
    assert s["ratio_median"] == pytest.approx(s["suggested_ratio"], rel=0.15)
    rows = read_csv(quick("rates") / "rates.csv")
    assert len(rows) == 8 and all(r["status"] == "completed" for r in rows)


def _square(job):
    return {"value": job["x"] ** 2}


def test_resumable_map_keeps_and_reuses_results(tmp_path):
    jobs = [{"x": x} for x in range(4)]
    folder = tmp_path / "kept"
    first = resumable_map(_square, jobs, workers=1, costs=[0.0] * 4, folder=folder)
    assert first == [{"value": x * x} for x in range(4)]
    assert len(list(folder.glob("*.json"))) == 4
    # a kept result is taken as it is: change one on disk and it comes back changed
    (folder / f"{job_key(jobs[2])}.json").write_text(json.dumps({"value": -1}))
    calls = []
    again = resumable_map(lambda job: calls.append(job) or _square(job), jobs + [{"x": 9}], workers=1,
                          costs=[0.0] * 5, folder=folder)
    assert again[2] == {"value": -1} and again[4] == {"value": 81} and calls == [{"x": 9}]
    assert np.array_equal([job_key({"x": 1})], [job_key({"x": 1})]) and job_key({"x": 1}) != job_key({"x": 2})
    finished(folder)
    assert not folder.exists()
