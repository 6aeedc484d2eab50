"""Checkpoints and resume, in process: interruption at any step, the holes between files,
edited configs, unreadable checkpoints, temporaries, locking, divergence."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from metarep.cli import main
from metarep.config.files import load
from metarep.config.schema import ConfigError, validate
from metarep.engine import build, train
from metarep.running.execute import execute_run
from metarep.storage import store
from run_helpers import result_files, stop_after

CONFIG = """[problem]
d = 5
k = 2
task_mean = [0.5, -0.5]
[model]
width = 4
[train]
tasks = {tasks}
batch_tasks = 6
m_in = 4
m_out = 4
steps = 40
log_every = 3
checkpoint_every = {every}
seed = 2
[test]
m_test = 4
tasks = 30
"""
REGIMES = {"finite": "12", "population": '"inf"', "online": '"online"'}


def _config(tmp: Path, regime: str = "finite", every: int = 0) -> Path:
    path = tmp / f"{regime}-{every}.toml"
    path.write_text(CONFIG.format(tasks=REGIMES[regime], every=every))
    return path




def _reference(tmp: Path, config: Path) -> dict[str, bytes]:
    result = execute_run(config, [], tmp / "reference", figure=False)
    assert result.status == "completed"
    return result_files(tmp / "reference")


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("every", [0, 5])
def test_interrupted_anywhere_resume_is_bit_identical(tmp_path, regime, every):
    config = _config(tmp_path, regime, every)
    ref = _reference(tmp_path, config)
    out = tmp_path / "run"
    rng = random.Random(hash((regime, every)) % 1000)
    result = execute_run(config, [], out, figure=False, should_stop=stop_after(rng.randint(1, 15)))
    assert result.status == "interrupted" and not (out / "summary.json").exists()
    for _ in range(3):  # interrupt the resumed run again, at another step
        result = execute_run(None, [], None, resume=out, figure=False, should_stop=stop_after(rng.randint(1, 12)))
        if result.status != "interrupted":
            break
    result = execute_run(None, [], None, resume=out, figure=False)
    assert result.status == "completed"
    assert result_files(out) == ref
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "metrics.csv", "params.npz", "summary.json"]


def test_interrupted_before_the_first_step_checkpoints_step_0(tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "run"
    result = execute_run(config, [], out, figure=False, should_stop=lambda: True)
    assert result.status == "interrupted" and "--resume" in result.message
    fresh = build(load(config)).initial_state()
    state = store.load_checkpoint(out, like=fresh, config_hash=store.config_hash(load(config)))
    assert state.step == 0 and state.history == []


def test_checkpoint_records_the_config_hash_and_holds_no_pickles(tmp_path):
    config = _config(tmp_path, "online", every=5)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(12))
    with np.load(out / store.CHECKPOINT, allow_pickle=False) as data:
        assert set(data.files) == {"B", "w", "history", "meta"}
        assert all(data[name].dtype != object for name in data.files)
        meta = json.loads(data["meta"].tobytes().decode())
    assert meta["config_hash"] == store.config_hash(load(out / "config.toml"))
    assert meta["step"] == 11 and meta["status"] == "interrupted" and meta["rng_state"]["bit_generator"] == "PCG64"


def test_resume_refuses_a_checkpoint_of_an_edited_config(tmp_path, capsys):
    config = _config(tmp_path, every=5)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(9))
    before = (out / store.CHECKPOINT).read_bytes()
    text = (out / "config.toml").read_text()
    (out / "config.toml").write_text(text.replace("beta = 0.05", "beta = 0.07"))
    assert main(["run", "--resume", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no longer matches" in err and "config.toml" in err and "Traceback" not in err
    assert (out / store.CHECKPOINT).read_bytes() == before and not (out / "summary.json").exists()
    # an edit that leaves the resolved config unchanged (a comment, a default spelled out) is fine
    (out / "config.toml").write_text("# same run\n" + text.replace("init_scale = 1.0", "init_scale = 1.000"))
    assert main(["run", "--resume", str(out), "--quiet"]) == 0


def test_killed_between_config_and_first_checkpoint_restarts_from_step_0(tmp_path):
    config = _config(tmp_path, "online")
    ref = _reference(tmp_path, config)
    out = tmp_path / "run"
    out.mkdir()
    store.write_config(out / "config.toml", load(config).to_dict())
    (out / ".checkpoint.npz.0123456789ab.tmp").write_bytes(b"torn")  # a write cut short
    assert execute_run(None, [], None, resume=out, figure=False).status == "completed"
    assert result_files(out) == ref and not list(out.glob(".*.tmp"))


def test_killed_after_summary_before_checkpoint_removal_is_done(tmp_path, capsys):
    config = _config(tmp_path, every=4)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(10))
    checkpoint = (out / store.CHECKPOINT).read_bytes()
    assert execute_run(None, [], None, resume=out, figure=False).status == "completed"
    done = result_files(out)
    (out / store.CHECKPOINT).write_bytes(checkpoint)
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert "already completed" in capsys.readouterr().out
    assert result_files(out) == done and not (out / store.CHECKPOINT).exists()


def test_killed_while_writing_results_resumes_identically(tmp_path):
    config = _config(tmp_path, "population", every=6)
    ref = _reference(tmp_path, config)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(20))
    shutil.copy(tmp_path / "reference" / "metrics.csv", out / "metrics.csv")  # results half written
    (out / "params.npz").write_bytes(b"stale")
    assert execute_run(None, [], None, resume=out, figure=False).status == "completed"
    assert result_files(out) == ref


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + bytes(100)])
def test_unreadable_checkpoint_is_refused_with_advice(tmp_path, capsys, content):
    config = _config(tmp_path, every=3)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(5))
    (out / store.CHECKPOINT).write_bytes(content)
    assert main(["run", "--resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unreadable" in err and "delete it" in err and "Traceback" not in err


def test_checkpoint_with_a_pickled_array_is_refused(tmp_path, capsys):
    config = _config(tmp_path, every=3)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(5))
    with np.load(out / store.CHECKPOINT, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["B"] = np.array([{"payload": 1}], dtype=object)
    np.savez(out / store.CHECKPOINT, **arrays)  # an object array can only be stored pickled
    assert main(["run", "--resume", str(out)]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


def test_directory_with_only_temporaries_counts_as_empty(tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".config.toml.abcdefabcdef.tmp").write_text("cut short")
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    assert (out / "summary.json").exists() and not list(out.glob(".*.tmp"))


def test_force_removes_the_old_results_first(tmp_path):
    config = _config(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    result = execute_run(config, ["train.steps=30"], out, force=True, figure=False, should_stop=stop_after(4),
                         prepare_out=lambda o, c, f: o)
    assert result.status == "interrupted"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "config.toml"]


def test_a_run_directory_in_use_is_refused(tmp_path, capsys):
    config = _config(tmp_path, every=2)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(5))
    with store.lock_run_dir(out):
        assert main(["run", "--resume", str(out)]) == 2
        assert "in use by another metarep process" in capsys.readouterr().err
        assert main(["run", str(config), "--out", str(out), "--force"]) == 2
    assert (out / store.CHECKPOINT).exists()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0


def test_atomic_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    store.atomic_write(target, b"old")

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        store.atomic_write(target, b"new")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_respects_the_umask_and_the_delay_hook(tmp_path, monkeypatch):
    monkeypatch.setenv(store.WRITE_DELAY_ENV, "0.001")
    store.atomic_write(tmp_path / "f.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~mask


def test_npz_bytes_are_reproducible_and_loadable_without_pickles():
    a = store.npz_bytes(B=np.arange(6.0).reshape(2, 3), w=np.ones(3))
    assert a == store.npz_bytes(B=np.arange(6.0).reshape(2, 3), w=np.ones(3))
    import io

    with np.load(io.BytesIO(a), allow_pickle=False) as data:
        np.testing.assert_array_equal(data["B"], np.arange(6.0).reshape(2, 3))


def test_wall_time_checkpoints_do_not_change_the_run(tmp_path):
    config = load(_config(tmp_path, "online"))
    exp = build(config)
    saved = []
    timed = train(exp, exp.initial_state(), on_checkpoint=lambda s: saved.append(s.step), checkpoint_seconds=0.0)
    assert saved == list(range(1, config.train.steps + 1))
    plain = train(exp, exp.initial_state(), on_checkpoint=lambda s: pytest.fail("no checkpoint expected"))
    np.testing.assert_array_equal(timed.params.B, plain.params.B)
    assert timed.history == plain.history


def _small(**train) -> dict:
    return {"problem": {"d": 4, "k": 2}, "model": {"width": 3},
            "train": {"tasks": 8, "m_in": 3, "m_out": 3, "steps": 25, "log_every": 4, **train},
            "test": {"m_test": 3, "tasks": 20}}


@pytest.mark.parametrize("train_keys, first_step", [
    ({"beta": 1e6}, 1),                                           # parameters explode after one update
    ({"alpha": 1e200, "tasks": "inf", "m_in": "inf", "m_out": "inf"}, 0),   # the loss overflows at once
    ({"beta": 50.0, "diverge_threshold": 1e300}, 1),              # runs far, then non-finite
])
def test_non_finite_values_stop_the_run_as_diverged_with_the_step(tmp_path, train_keys, first_step):
    out = tmp_path / "run"
    path = tmp_path / "c.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(_small(**train_keys)))
    result = execute_run(path, [], out, figure=False)
    s = json.loads((out / "summary.json").read_text())
    assert result.status == s["status"] == "diverged"
    assert s["diverged_step"] >= first_step and f"diverged at step {s['diverged_step']}" in s["message"]
    assert not (out / store.CHECKPOINT).exists()


def test_test_time_divergence_is_reported(tmp_path):
    path = tmp_path / "c.toml"
    import tomli_w

    data = _small(steps=3)
    data["test"].update(alpha=1e150, adapt_steps=3)
    path.write_text(tomli_w.dumps(data))
    result = execute_run(path, [], tmp_path / "run", figure=False)
    assert result.status == "diverged" and "test time" in result.message and "test.alpha" in result.message


def test_validation_happens_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError):
        validate({"train": {"steps": -1}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = -1\n")
    with pytest.raises(ConfigError):
        execute_run(bad, [], tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_flipped_bit_in_the_checkpoint_is_detected(tmp_path, capsys):
    config = _config(tmp_path, every=3)
    out = tmp_path / "run"
    execute_run(config, [], out, figure=False, should_stop=stop_after(5))
    data = bytearray((out / store.CHECKPOINT).read_bytes())
    data[data.find(b"B.npy") + 200] ^= 0x01  # inside B's values: only the zip CRC can tell
    (out / store.CHECKPOINT).write_bytes(bytes(data))
    assert main(["run", "--resume", str(out)]) == 2
    assert "CRC" in capsys.readouterr().err
