"""Benchmarks of metarep's outer step against the ways other frameworks compute it.

- `metarep.bench.contenders`: one meta-gradient step of FO-ANIL / exact ANIL written the way the
  users of each framework write it (NumPy loops and batched NumPy, PyTorch autograd, `higher`,
  `torch.func`, JAX), and metarep itself on each kernel backend.
- `metarep.bench.harness`: checks every contender's gradient against metarep's and times them on
  the same data (with `--load N`, beside N CPU-bound processes: `metarep.bench.load`);
  `metarep.bench.population` measures population-step throughput; `metarep.bench.config` holds
  what to measure and the results (`metarep bench`).
- `metarep.bench.targets`: the performance targets, PASS or FAIL; `metarep.bench.report`: the
  Markdown report and its JSON form.
- `metarep.bench.bandwidth`: the machine's read bandwidth, the yardstick for a memory-bound step.
- `metarep.bench.machine`: what the report records about the machine.
- `metarep.bench.scale`: memory per task, and how many tasks fit per GB.

Optional frameworks are imported only when their contender is built; none is ever installed.
"""

from metarep.bench.bandwidth import measure_read_bandwidth
from metarep.bench.contenders import CONTENDERS, make_contender
from metarep.bench.harness import BenchConfig, BenchResult, run_benchmark
from metarep.bench.report import format_report, result_to_dict

__all__ = ["CONTENDERS", "BenchConfig", "BenchResult", "format_report", "make_contender",
           "measure_read_bandwidth", "result_to_dict", "run_benchmark"]
