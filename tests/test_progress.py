"""Progress: a line every ~10 s where output is not a terminal, a tqdm bar on one, nothing
when disabled."""

from __future__ import annotations

import io

import pytest

from metarep.running import progress as progress_module
from metarep.running.progress import progress


class Clock:
    """time.monotonic stand-in: each call advances by `tick` seconds."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_lines_every_interval_when_not_a_terminal(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", Clock(3.0))  # 3 s per update
    stream = io.StringIO()
    with progress(10, 0, True, unit="step", stream=stream) as bar:
        for _ in range(10):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    # start at t=3; updates at t=6, 9, ..., 33: a line at t=15 (4 steps), t=27 (8 steps), then the last one
    assert lines[0].startswith("4/10 steps (40%), 12 s elapsed, about 18 s left"), lines
    assert lines[1].startswith("8/10 steps (80%), 24 s elapsed, about 6 s left"), lines
    assert lines[-1].startswith("10/10 steps (100%)") and "left" not in lines[-1]
    assert len(lines) == 3


def test_no_line_for_a_short_loop_and_counts_from_initial(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", Clock(0.001))
    stream = io.StringIO()
    with progress(100, 40, True, unit="run", desc="sweep", stream=stream) as bar:
        bar.update(60)
    assert stream.getvalue() == ""
    stream = io.StringIO()
    with progress(100, 40, True, unit="run", desc="sweep", stream=stream, interval=0.0) as bar:
        bar.update(30)
    assert stream.getvalue().splitlines()[0].startswith("sweep: 70/100 runs (70%)")


def test_messages_and_disabled(monkeypatch):
    stream = io.StringIO()
    with progress(5, 0, False, stream=stream) as bar:
        bar.update(5)
        bar.write("failed: one run")
    assert stream.getvalue() == "failed: one run\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("enabled", [True, False])
def test_a_bar_on_a_terminal(enabled):
    stream = Terminal()
    with progress(4, 0, enabled, stream=stream) as bar:
        bar.update(4)
    text = stream.getvalue()
    if enabled:
        assert "\r" in text and "%|" in text and "/4" in text  # a tqdm bar, redrawn in place
    else:
        assert text == ""


def test_no_repeated_last_line_and_messages_are_not_progress(monkeypatch):
    monkeypatch.setattr(progress_module.time, "monotonic", Clock(5.0))
    stream = io.StringIO()
    with progress(4, 0, True, stream=stream) as bar:
        bar.write("failed: a run")
        for _ in range(4):
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "failed: a run"
    assert [line.split(",")[0] for line in lines[1:]] == ["2/4 steps (50%)", "4/4 steps (100%)"]
    stream = io.StringIO()
    with progress(4, 0, True, stream=stream) as bar:
        bar.write("only a message")
    assert stream.getvalue() == "only a message\n"
