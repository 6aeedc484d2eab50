"""metarep: how gradient-based meta-learning learns shared low-rank representations.

The core (problem, tasks, linear, methods, population, theory, adapt, metrics) is a set of
pure functions over NumPy arrays; config, runner, store, sweep, plots and the CLI sit on top.
The formulas follow MATH.md (sections cited in each docstring).
"""

from metarep.problem import Problem, make_problem, sample_heads, sample_tasks
from metarep.tasks import Tasks
from metarep.params import Params

__all__ = ["Problem", "Params", "Tasks", "make_problem", "sample_heads", "sample_tasks"]
__version__ = "0.1.0"
