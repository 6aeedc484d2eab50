"""Real-data configs through the engine: `metarep run`, `metarep.run`, resume, bad input (one
line, exit 2, nothing written), and the same subspace recovery as the synthetic path."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import subspace_angles

import metarep
from metarep.cli import main
from metarep.config.schema import validate
from metarep.engine.sources import synthetic_source
from metarep.running.execute import execute_run

D, K = 6, 2


def write_table(tmp_path, n_tasks=30, seed=0):
    """A table drawn from a synthetic problem: task, x0..x5, a categorical 'kind', y."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(12, 40, size=n_tasks)
    B = np.linalg.qr(rng.standard_normal((D, K)))[0]
    heads = rng.standard_normal((n_tasks, K))
    task = np.repeat(np.arange(n_tasks), sizes)
    X = rng.standard_normal((len(task), D))
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(D)])
    frame.insert(0, "school", [f"s{t}" for t in task])
    frame["kind"] = rng.choice(["a", "b"], size=len(task))
    frame["y"] = np.einsum("rd,rd->r", X, heads[task] @ B.T) + 0.3 * rng.standard_normal(len(task))
    path = tmp_path / "schools.csv"
    frame.to_csv(path, index=False)
    return path, frame


def write_config(tmp_path, path, extra=""):
    text = f"""[data]
path = "{path}"
task = "school"
target = "y"
[model]
width = 4
[train]
m_in = 5
m_out = 5
steps = 30
log_every = 4
checkpoint_every = 7
[test]
m_test = 5
{extra}"""
    config = tmp_path / "config.toml"
    config.write_text(text)
    return config


def test_a_table_runs_through_the_cli_and_the_api_alike(tmp_path):
    path, _ = write_table(tmp_path)
    config = write_config(tmp_path, path)
    assert main(["run", str(config), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    header = (tmp_path / "cli" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "loss", "sv_0", "sv_1", "sv_2", "sv_3"]  # nothing that needs B*
    assert "theory" not in summary and set(summary["final"]) == {"loss", "singular_values", "rank", "rank_rel_tol"}
    test = summary["test"]
    assert test["mse"] > 0 and test["mse_se"] > 0 and "excess_risk" not in test
    assert test["data"]["tasks"] == 30 and test["data"]["heldout_tasks"] == test["tasks"] == 6
    assert test["data"]["features"] == [*(f"x{j}" for j in range(D)), "kind=b", "(intercept)"]
    assert sorted(np.load(tmp_path / "cli" / "params.npz")) == ["B", "w"]
    result = metarep.run(str(config))
    assert result.summary == summary
    metarep.run(str(config), out=tmp_path / "api")
    for name in ("config.toml", "metrics.csv", "params.npz", "summary.json"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


@pytest.mark.parametrize("draw", ["every_step", "once"])
def test_resume_is_bit_identical(tmp_path, draw):
    path, _ = write_table(tmp_path)
    config = write_config(tmp_path, path)
    config.write_text(config.read_text().replace('target = "y"\n', f'target = "y"\ndraw = "{draw}"\n'))
    assert execute_run(config, [], tmp_path / "ref", figure=False).status == "completed"
    out, rng = tmp_path / "run", random.Random(draw)

    def stop_at(step):
        calls = [0]

        def stop():
            calls[0] += 1
            return calls[0] == step
        return stop

    assert execute_run(config, [], out, figure=False, should_stop=stop_at(rng.randint(2, 12))).status == "interrupted"
    resumed = execute_run(None, [], None, resume=out, figure=False, should_stop=stop_at(rng.randint(2, 12)))
    assert resumed.status == "interrupted"
    assert execute_run(None, [], None, resume=out, figure=False).status == "completed"
    for name in ("metrics.csv", "params.npz", "summary.json"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()


def test_rows_drawn_every_step_differ_from_rows_drawn_once(tmp_path):
    path, _ = write_table(tmp_path)
    config = validate({"data": {"path": str(path), "task": "school", "target": "y"},
                       "train": {"m_in": 5, "m_out": 5, "steps": 5}, "test": {"m_test": 5}})
    once = validate({**config.to_dict(), "data": {**config.to_dict()["data"], "draw": "once"}})
    every, fixed = metarep.run(config), metarep.run(once)
    assert every.metrics["loss"].iloc[1:].tolist() != fixed.metrics["loss"].iloc[1:].tolist()


# --- bad input: one line on stderr, exit status 2, nothing written -------------------------------

BAD = {
    "missing file": ('path = "{dir}/nope.csv"', "data.path: no such file"),
    "missing column": ('target = "score"', "data.target: no column 'score'"),
    "non-numeric target": ('target = "kind"', "column 'kind' is not numeric"),
    "single task": ('task = "kind"\nfeatures = ["x0"]', None),
    "too few rows": ("", "too few tasks after filtering"),
    "key that does not apply": ('dataset = "exam"', "either path"),
    "missing values": ("", "rows have missing values (x1: 2)"),
    "truth needed": ("", "needs the true representation B*"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case):
    path, frame = write_table(tmp_path)
    line, expected = BAD[case]
    config = write_config(tmp_path, path)
    text = config.read_text()
    if case == "missing values":
        frame.loc[[1, 50], "x1"] = np.nan
        frame.to_csv(path, index=False)
    if case == "single task":
        frame.assign(kind="same").to_csv(path, index=False)
        expected = "single task"
    for key in ("path", "target", "task"):
        if line.startswith(key):
            text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"{key} ="))
    text = text.replace("[data]\n", f"[data]\n{line.format(dir=tmp_path)}\n")
    if case == "too few rows":
        text = text.replace("m_in = 5", "m_in = 50")
    if case == "truth needed":
        text += '[method]\nname = "oracle"\n'
    config.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err
    assert not out.exists()


def test_the_table_path_recovers_the_subspace_as_the_synthetic_path(tmp_path):
    """The synthetic run's own training tasks written as a table (one row per sample), read back
    with every row drawn once (5% of the tasks held out): FO-ANIL recovers B* from it as from the
    synthetic tasks."""
    n, steps = 400, 1000
    synthetic = {"problem": {"d": 8, "k": K, "task_cov": [1.0, 2.0], "noise_std": 0.5}, "model": {"width": 8},
                 "train": {"tasks": n, "m_in": 10, "m_out": 10, "steps": steps, "log_every": steps}}
    source = synthetic_source(validate(synthetic))
    X, y = source.tasks.pooled()
    frame = pd.DataFrame(X.reshape(-1, 8), columns=[f"x{j}" for j in range(8)])
    frame.insert(0, "task", np.repeat(np.arange(n), 20))
    frame["y"] = y.ravel()
    frame.to_csv(tmp_path / "tasks.csv", index=False)
    table = {"data": {"path": str(tmp_path / "tasks.csv"), "task": "task", "target": "y", "draw": "once",
                      "standardize": False, "intercept": False, "test_fraction": 0.05},
             "model": {"width": 8}, "train": {"m_in": 10, "m_out": 10, "steps": steps, "log_every": steps},
             "test": {"m_test": 10}}

    def angle(result):
        top = np.linalg.svd(result.params["B"], full_matrices=False)[0][:, :K]
        return subspace_angles(top, source.truth.B_star).max()

    initial = angle(metarep.run({**synthetic, "train": {**synthetic["train"], "steps": 0}}))
    from_table, from_model = angle(metarep.run(table)), angle(metarep.run(synthetic))
    assert initial > 0.5
    assert from_model < 0.1 and from_table < 0.1 and abs(from_table - from_model) < 0.02
