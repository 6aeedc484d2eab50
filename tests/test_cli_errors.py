"""User errors at the command line: one line on stderr, exit status 2, no traceback, nothing
written. A handful run as real processes (`python -m metarep.cli`), the rest in process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import metarep
from metarep.cli import main
from metarep.config.schema import validate
from metarep.methods import registered
from metarep.running import resources

GOOD = """[problem]
d = 4
k = 2
[model]
width = 3
[train]
tasks = 6
m_in = 3
m_out = 3
steps = 4
log_every = 2
[test]
m_test = 3
tasks = 5
"""


def _assert_one_line_error(code: int, err: str, out_dir: Path | None = None, needle: str = "") -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and err[:-1].isprintable()
    assert needle in err, err
    if out_dir is not None:
        assert not out_dir.exists()


def test_process_level_refusals(tmp_path):
    """Real processes, run side by side: status 2, one line, no traceback, no directory."""
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    (tmp_path / "latin1.toml").write_bytes(GOOD.encode() + b"# caf\xe9\n")
    (tmp_path / "broken.toml").write_text(GOOD + "[train\n")
    (tmp_path / "section.toml").write_text(GOOD + "[optimizer]\nlr = 1\n")
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "out"
    cases = {
        "non-UTF-8": (["latin1.toml"], "not UTF-8"),
        "malformed TOML": (["broken.toml"], "not valid TOML"),
        "unknown section": (["section.toml"], "optimizer: unknown key"),
        "too big for memory": (["good.toml", "--set", "train.tasks=100000000000", "--set", "problem.d=1000"],
                               "lower train.tasks"),
        "--out is a file": (["good.toml", "--out", str(tmp_path / "a-file")], "not a directory"),
        "resume a non-run": (["--resume", str(tmp_path)], "not a run directory"),
    }
    procs = {}
    for name, (args, _) in cases.items():
        argv = [sys.executable, "-m", "metarep.cli", "run", *[str(tmp_path / a) if a.endswith(".toml") else a
                                                              for a in args]]
        if "--out" not in args and "--resume" not in args:
            argv += ["--out", str(out)]
        procs[name] = subprocess.Popen(argv + ["--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       env=dict(os.environ, METAREP_KERNEL="numpy"))
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        _assert_one_line_error(proc.returncode, stderr.decode(), out, cases[name][1])
        assert stdout == b""
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    return path


@pytest.mark.parametrize("argv, needle", [
    ([], "give either CONFIG or --resume DIR"),
    (["{good}", "--resume", "{tmp}"], "give either CONFIG or --resume DIR"),
    (["--resume", "{tmp}", "--set", "train.steps=3"], "drop --set and --out"),
    (["{good}", "--bogus"], "No such option"),
    (["{tmp}"], "cannot read config"),                          # a directory
    (["/dev/zero"], "larger than 16 MiB"),                      # endless input is not read to the end
    (["{good}", "--set", "train.steps"], "--set expects section.key=value"),
    (["{good}", "--set", "method.name=\"\\u0007\\n\""], "method.name must be one of"),
    (["{good}", "--set", "method.name=\"__import__('os').system('touch pwned')\""], "method.name must be one of"),
    (["{good}", "--set", "test.tasks=1000000000000000"], "lower test.tasks"),
    (["{good}", "--set", "train.steps=100000000000000", "--set", "train.log_every=1"], "raise train.log_every"),
    (["{good}", "--set", "problem.d=1000000000000", "--set", "problem.k=1000000000000"], "GiB"),
    (["{good}", "--set", "problem.noise_std=1e200"], "problem.noise_std is too large"),
    (["{good}", "--set", "problem.task_cov=0.0", "--set", "problem.noise_std=0.0"], "both 0"),
])
def test_in_process_refusals(tmp_path, good, capsys, argv, needle):
    out = tmp_path / "out"
    argv = [a.format(good=good, tmp=tmp_path) for a in argv]
    code = main(["run", *argv, *(["--out", str(out)] if argv and argv[0] != "--resume" else []), "--quiet"])
    captured = capsys.readouterr()
    _assert_one_line_error(code, captured.err, out, needle)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_output_under_a_file_is_one_line(tmp_path, good, capsys):
    (tmp_path / "f").write_text("x")
    code = main(["run", str(good), "--out", str(tmp_path / "f" / "run"), "--quiet"])
    _assert_one_line_error(code, capsys.readouterr().err, needle="")


def test_out_of_memory_while_running_is_one_line(tmp_path, good, capsys, monkeypatch):
    import metarep.running.execute

    def explode(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(metarep.running.execute, "execute_run", explode)
    code = main(["run", str(good), "--out", str(tmp_path / "o"), "--quiet"])
    _assert_one_line_error(code, capsys.readouterr().err, tmp_path / "o", "out of memory")


def test_memory_estimate_counts_every_part():
    base = {"problem": {"d": 50, "k": 3}, "model": {"width": 20},
            "train": {"tasks": 1000, "m_in": 10, "m_out": 10, "steps": 100},
            "test": {"m_test": 20, "tasks": 500}}

    def parts(**changes):
        data = {s: dict(t) for s, t in base.items()}
        for key, value in changes.items():
            section, name = key.split("__")
            data.setdefault(section, {})[name] = value
        return resources.estimate_bytes(validate(data))

    ref = parts()
    assert set(ref) == {"problem", "train_tasks", "working", "test_tasks", "history"}
    assert ref["train_tasks"] >= 1000 * 20 * 51 * 8                   # X_in, X_out, y of every task
    assert parts(train__inner_steps=5)["working"] > ref["working"]     # the inner path is kept
    assert parts(test__m_test=200)["test_tasks"] > ref["test_tasks"]   # test features X B per chunk
    assert parts(model__width=200)["test_tasks"] > ref["test_tasks"]
    assert parts(test__tasks=10**7)["test_tasks"] >= 8 * 10**7         # one risk per test task
    assert parts(train__steps=10**6, train__log_every=1)["history"] > 10**6 * 20
    assert parts(train__tasks="inf", train__m_in="inf", train__m_out="inf")["train_tasks"] == 0
    assert parts(train__tasks="online", train__batch_tasks=7)["train_tasks"] == 7 * (20 * 51 + 3) * 8
    per_task_heads = [m.name for m in registered("linear") if m.per_task_state]
    assert per_task_heads
    for name in per_task_heads:                                        # e.g. Burer-Monteiro: N x k' heads
        assert parts(method__name=name)["working"] >= ref["working"] + 1000 * 20 * 8
    assert resources.available_bytes() > 0


def test_refusal_names_the_setting_and_the_sizes(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda: 2**30)
    config = validate({"train": {"tasks": 10**6, "m_in": 50, "m_out": 50}, "problem": {"d": 100}})
    with pytest.raises(resources.ResourceError, match=r"needs about [\d.]+ GiB \(train_tasks .*GiB\) but 1 GiB "
                                                      r"is available: lower train.tasks"):
        resources.check_memory(config)


def test_config_data_is_never_executed_or_unpickled():
    """No module loads pickles or evaluates text: configs and checkpoints are plain data."""
    root = Path(metarep.__file__).parent
    pattern = re.compile(r"allow_pickle\s*=\s*True|\bpickle\.loads?\(|\beval\(|\bexec\(|yaml\.load\(|marshal\.loads")
    offenders = [f"{p.relative_to(root)}:{n}" for p in root.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
