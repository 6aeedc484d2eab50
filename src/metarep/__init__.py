"""metarep: how gradient-based meta-learning learns shared low-rank representations.

The Python API (README, section "Python"):

    run(config, *, out=None, progress=False) -> Result     train and evaluate one experiment
    load(run_dir) -> Result                                 a finished run directory
    sweep(config, grid={...}, seeds=..., out=...) -> DataFrame   a grid of runs, resumable
    methods() -> DataFrame                                  the registered methods and what they can do
    Config, ConfigError                                     the validated config, and bad input

The numerical core (families/, linear/, nonlinear/, methods/, compute/) is a set of pure
functions over arrays; config/, engine/, running/, storage/, sweeps/, reproduce/, report/ and
cli/ sit on top. The formulas follow MATH.md (sections cited in each docstring).
`metarep.threads` and `metarep.kernels` (thread limits and kernel backends for a block of code)
are `metarep.compute.threads` and `metarep.compute.kernels`.
"""

from metarep import methods as _registry
from metarep.api import GroundTruth, Result, load, run
from metarep.compute import kernels as kernels
from metarep.compute import threads as threads
from metarep.config.schema import Config, ConfigError
from metarep.families.problem import Problem, make_problem, sample_heads, sample_tasks
from metarep.families.tasks import Tasks
from metarep.linear.params import Params

__all__ = ["Config", "ConfigError", "GroundTruth", "Params", "Problem", "Result", "Tasks", "load", "make_problem",
           "methods", "run", "sample_heads", "sample_tasks", "sweep"]
__version__ = "0.1.0"


def methods(arch: str | None = None):
    """The registered methods (of one arch, "linear" or "mlp") and what each can do: a pandas
    DataFrame, one row each. The registry itself is the package metarep.methods
    (`from metarep.methods import Method, register`)."""
    return _registry.table(arch)


# `metarep.methods.register(...)` reads as the package's register: the name metarep.methods is
# this function, which carries the registry's functions people reach through it.
methods.register = _registry.register  # type: ignore[attr-defined]
methods.unregister = _registry.unregister  # type: ignore[attr-defined]
methods.registered = _registry.registered  # type: ignore[attr-defined]
methods.Method = _registry.Method  # type: ignore[attr-defined]


def sweep(config, grid=None, *, seeds=None, backend: str = "local", workers: int | None = None, out,
          progress: bool = False):
    """Run the cartesian product of `grid` ({"section.key": [values]}) and `seeds` over `config`
    (a dict, a TOML path or a Config) into `out`, each run in its own directory; returns the
    results table (one row per run, results.csv's columns) as a pandas DataFrame. Running it
    again on the same `out` skips what is complete and resumes the rest, as `metarep sweep` does.
    When runs fail, metarep.sweeps.RunsFailed is raised once all are recorded (its `table`: the
    rows). A script needs no `if __name__ == "__main__":`: the workers do not re-run it."""
    from metarep.sweeps import run_grid

    return run_grid(config, grid or {}, seeds=seeds, backend=backend, workers=workers, out=out, progress=progress)
