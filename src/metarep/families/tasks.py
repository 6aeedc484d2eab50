"""A batch of regression tasks as stacked arrays, and views of it in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tasks:
    """N tasks: X_in (N, m_in, d), y_in (N, m_in), X_out (N, m_out, d), y_out (N, m_out).

    w_star (N, k) holds the true heads when the tasks are synthetic, else None.
    """

    X_in: np.ndarray
    y_in: np.ndarray
    X_out: np.ndarray
    y_out: np.ndarray
    w_star: np.ndarray | None = None

    @property
    def n_tasks(self) -> int:
        return self.X_in.shape[0]

    @property
    def d(self) -> int:
        return self.X_in.shape[2]

    @property
    def m_in(self) -> int:
        return self.X_in.shape[1]

    @property
    def m_out(self) -> int:
        return self.X_out.shape[1]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.X_in, self.y_in, self.X_out, self.y_out))

    def select(self, index) -> Tasks:
        """The tasks at `index` (a slice gives views, no copy)."""
        w = None if self.w_star is None else self.w_star[index]
        return Tasks(self.X_in[index], self.y_in[index], self.X_out[index], self.y_out[index], w)

    def chunks(self, size: int) -> Iterator[Tasks]:
        """Consecutive views of at most `size` tasks."""
        for start in range(0, self.n_tasks, size):
            yield self.select(slice(start, start + size))

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples of each task, inner then outer: X (N, m_in + m_out, d), y (N, m_in + m_out)."""
        return (np.concatenate([self.X_in, self.X_out], axis=1),
                np.concatenate([self.y_in, self.y_out], axis=1))
