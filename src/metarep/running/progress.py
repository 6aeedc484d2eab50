"""Progress of a long loop: a bar on a terminal, a line every ~10 s anywhere else.

A log file, CI output or a notebook cell cannot redraw a bar in place: there, a plain line
such as `steps: 1200/5000 (24%), 12 s elapsed, about 38 s left` is written every `interval`
seconds, and a last one when the loop ends (if any was written before).

    with progress(total, initial, enabled, unit="step") as bar:
        for ...:
            bar.update(1)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

INTERVAL_S = 10.0


def _seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class LineProgress:
    """Writes `<unit>s: n/total (p%), elapsed, about ... left` to `stream` at most every
    `interval` seconds of `clock` (and once more at the end, if it has written anything)."""

    def __init__(self, total: int, initial: int, *, unit: str, desc: str, stream: IO[str], interval: float,
                 clock: Callable[[], float] | None = None):
        self.total, self.n, self.start_n = total, initial, initial
        self.unit, self.desc, self.stream, self.interval = unit, desc, stream, interval
        self.clock = clock or time.monotonic
        self.start = self.last = self.clock()
        self.lines = 0  # progress lines written
        self.written = initial  # the count the last line showed
        # The rate is measured from the end of the first update: that one includes one-off costs
        # (compiling the kernels took 117 s once) that would make every estimate hours long.
        self.rate_from: tuple[float, int] | None = None

    def line(self, now: float) -> str:
        elapsed = now - self.start
        text = f"{self.desc + ': ' if self.desc else ''}{self.n}/{self.total} {self.unit}s"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {_seconds(elapsed)} elapsed"
        if self.rate_from is not None and self.n > self.rate_from[1] and self.n < self.total:
            t0, n0 = self.rate_from
            text += f", about {_seconds((now - t0) / (self.n - n0) * (self.total - self.n))} left"
        return text

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if self.rate_from is None:
            self.rate_from = (now, self.n)
        if now - self.last >= self.interval:
            self._emit(now)

    def _emit(self, now: float) -> None:
        self.last, self.written = now, self.n
        self.lines += 1
        self.write(self.line(now))

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.lines and self.n != self.written:
            self._emit(self.clock())


class _Bar:
    """tqdm's bar, with the same two methods."""

    def __init__(self, bar: Any, stream: IO[str]):
        self.bar, self.stream = bar, stream

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def write(self, text: str) -> None:
        self.bar.write(text, file=self.stream)


class _Silent:
    def __init__(self, stream: IO[str]):
        self.stream = stream

    def update(self, n: int = 1) -> None:
        pass

    def write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


@contextmanager
def progress(total: int, initial: int = 0, enabled: bool = True, *, unit: str = "step", desc: str = "",
             stream: IO[str] | None = None, interval: float = INTERVAL_S) -> Iterator[Any]:
    """A progress display for a loop of `total` units of which `initial` are done.

    On a terminal (`stream`, default stderr, is a TTY): a tqdm bar. Otherwise: a line every
    `interval` seconds. With `enabled` False: nothing. The object has `.update(n)` (n more
    units done) and `.write(text)` (a message on its own line, which does not break the bar).
    """
    out = sys.stderr if stream is None else stream
    if not enabled:
        yield _Silent(out)
    elif getattr(out, "isatty", lambda: False)():
        from tqdm import tqdm

        with tqdm(total=total, initial=initial, unit=unit, desc=desc or None, file=out, leave=False,
                  dynamic_ncols=True) as bar:
            yield _Bar(bar, out)
    else:
        lines = LineProgress(total, initial, unit=unit, desc=desc, stream=out, interval=interval)
        try:
            yield lines
        finally:
            lines.close()
