"""Messages a new user reads: the progress estimate, `metarep methods --arch`, a completed run
directory, the memory advice of a three-layer network, and what a table run prints."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from metarep.cli import main
from metarep.config.schema import validate
from metarep.running import progress as progress_module
from metarep.running import resources
from metarep.running.progress import progress


class Clock:
    """time.monotonic stand-in: the first update comes after `first` seconds, the others 1 s apart."""

    def __init__(self, first: float):
        self.calls, self.first = 0, first

    def __call__(self) -> float:
        self.calls += 1
        return 0.0 if self.calls == 1 else self.first + self.calls - 2


def test_the_estimate_leaves_out_the_slow_first_step(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", Clock(first=120.0))  # the kernels compile
    stream = io.StringIO()
    with progress(1000, 0, True, unit="step", stream=stream) as bar:
        for _ in range(30):
            bar.update(1)
    first = stream.getvalue().splitlines()[0]
    # 1 s a step after the first: 970 steps left are about 16 minutes, not 1000 * 4 s
    assert first.startswith("1/1000 steps (0%), 2.0 min elapsed"), first
    assert "left" not in first
    line = stream.getvalue().splitlines()[1]
    assert line.startswith("11/1000 steps") and "about 16.5 min left" in line, line


def test_methods_of_an_unknown_arch_is_one_line_exit_2(capsys):
    assert main(["methods", "--arch", "cnn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--arch: model.arch must be one of linear, mlp, got 'cnn'" in err


def test_a_completed_run_directory_is_not_offered_a_resume(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    config = tmp_path / "c.toml"
    config.write_text("[train]\nsteps = 1\n")
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a completed run" in err and "--resume" not in err


def test_memory_advice_names_the_first_layer_of_a_three_layer_network(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda: 2**20)
    config = validate({"problem": {"d": 50, "k": 2}, "model": {"arch": "mlp", "layers": 3, "hidden": 4000, "width": 8},
                       "train": {"tasks": 2000, "m_in": 10, "m_out": 10}})
    with pytest.raises(resources.ResourceError, match=r"model\.hidden or model\.width"):
        resources.check_memory(config)
    linear = validate({"problem": {"d": 50, "k": 2}, "model": {"width": 8}, "train": {"tasks": 2000}})
    with pytest.raises(resources.ResourceError) as err:
        resources.check_memory(linear)
    assert "model.hidden" not in str(err.value)


def test_a_table_run_prints_what_the_data_gave(tmp_path, capsys):
    rows = ["school,x0,x1,y"] + [f"s{t},{(t * 7 + i) % 5},{(i * 3) % 4},{t + i % 3}" for t in range(12)
                                  for i in range(3 if t == 0 else 14)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\ntask = "school"\ntarget = "y"\n'
                      "[model]\nwidth = 2\n[train]\nm_in = 4\nm_out = 4\nsteps = 3\n[test]\nm_test = 4\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    err, last = captured.err, captured.out.strip().splitlines()[-1]
    assert "data: reading " not in err  # read at once: nothing announced
    assert "t.csv: d = 3, " in err and "training / " in err and "held-out tasks of 12" in err
    assert "dropped as too small" in err and "rows (0 dropped for missing values)" in err
    assert "data " in last and "d = 3" in last and "held-out tasks of 12" in last
    assert Path(tmp_path / "run" / "summary.json").exists()


def test_a_slow_table_read_is_announced_and_a_refused_one_is_one_line(tmp_path, capsys, monkeypatch):
    import time

    import metarep.running.execute

    rows = ["school,x0,y"] + [f"s{t},{i},{t + i}" for t in range(12) for i in range(14)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\ntask = "school"\ntarget = "y"\n'
                      "[model]\nwidth = 1\n[train]\nm_in = 4\nm_out = 4\nsteps = 2\n[test]\nm_test = 4\n")
    build = metarep.running.execute.build
    monkeypatch.setattr(metarep.running.execute, "SLOW_BUILD_S", 0.05)
    monkeypatch.setattr(metarep.running.execute, "build", lambda c: (time.sleep(0.5), build(c))[1])
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "data: reading " in err and "encoding its features" in err
    monkeypatch.setattr(metarep.running.execute, "build", build)  # refused at once: one line, nothing announced
    (tmp_path / "t.csv").write_text("school,x0,y\n")
    assert main(["run", str(config), "--out", str(tmp_path / "run2"), "--set", "train.steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the table is empty" in err
