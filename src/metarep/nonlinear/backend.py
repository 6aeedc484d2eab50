"""Where and in which precision the network is trained: torch tensors from and to NumPy.

The parameters and the optimizer state are tensors on the chosen device from the first step to
the last (`to_device`); they come back to NumPy (`to_host`) only for a metrics row, a checkpoint
and the results. On the CPU in float64 both directions share memory (no copy).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from metarep.nonlinear.model import MLPParams

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device: str) -> str:
    """"cpu", "cuda", or "auto" (cuda where one is available, else cpu)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device = \"cuda\" but torch sees no CUDA device here: use \"cpu\" or \"auto\"")
    return device


@dataclass(frozen=True)
class Net:
    """The network's activation and the precision and device it is trained in."""

    activation: str = "relu"
    dtype: str = "float64"
    device: str = "cpu"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def tensor(self, a) -> torch.Tensor:
        """`a` as a tensor of this dtype on this device (no copy for a float64 CPU array)."""
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.torch_dtype)
        return torch.as_tensor(np.asarray(a), dtype=self.torch_dtype, device=self.device)


class TorchTasks(NamedTuple):
    """N tasks as tensors: X_in (N, m_in, d), y_in (N, m_in), X_out (N, m_out, d), y_out (N, m_out)."""

    X_in: torch.Tensor
    y_in: torch.Tensor
    X_out: torch.Tensor
    y_out: torch.Tensor

    @property
    def n_tasks(self) -> int:
        return self.X_in.shape[0]


def torch_tasks(tasks, net: Net) -> TorchTasks:
    """`metarep.families.tasks.Tasks` (or TorchTasks) on the net's device and dtype; a training set that
    does not change is converted once by the caller and passed as TorchTasks."""
    if isinstance(tasks, TorchTasks):
        return tasks
    return TorchTasks(*(net.tensor(a) for a in (tasks.X_in, tasks.y_in, tasks.X_out, tasks.y_out)))


def torch_params(params: MLPParams, net: Net) -> dict[str, torch.Tensor]:
    """The present fields (body and head `w`) as tensors, by name."""
    return {**{k: net.tensor(v) for k, v in params.body().items()}, "w": net.tensor(params.w)}


def tensor_params(tensors: dict[str, torch.Tensor], like: MLPParams) -> MLPParams:
    """Tensors by name as MLPParams, absent fields as empty tensors beside `like`'s head."""
    empty = tensors["w"].new_zeros(0)
    return MLPParams(*(tensors.get(name, empty) for name in like._fields))


def to_device(tree, net: Net):
    """Parameters (a NamedTuple) or optimizer state (a dict) with every float NumPy array as a
    tensor on the net's device and dtype (sharing memory for a float64 CPU array); other leaves
    (tensors, the optimizer's integer step count) as they are."""
    if tree is None:
        return None
    convert = (lambda a: net.tensor(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a)
    if isinstance(tree, dict):
        return {k: convert(v) for k, v in tree.items()}
    return type(tree)(*(convert(a) for a in tree))


def shared_tensors(params: MLPParams) -> MLPParams:
    """A gradient the compiled CPU pass returns as NumPy arrays, as CPU tensors sharing their
    memory (no copy); tensors as they are."""
    return MLPParams(*(a if isinstance(a, torch.Tensor) else torch.from_numpy(a) for a in params))


def _on_host(a) -> bool:
    return isinstance(a, torch.Tensor) and a.device.type == "cpu" and not a.requires_grad


def take_rows(a, rows: np.ndarray):
    """a[rows] along the first axis, for a NumPy array or a tensor (indexed on its device). A CPU
    tensor is indexed through NumPy, which shares its memory and gathers on one thread: 250 of
    5000 tasks (2 MB) in 0.06 ms against torch's 0.1 ms on an idle machine, and torch's
    multi-threaded gather took 5 ms while other work kept both cores busy."""
    if _on_host(a):
        return torch.from_numpy(a.numpy()[rows])
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(rows, device=a.device)]
    return a[rows]


def put_rows(a, rows: np.ndarray, values):
    """A copy of `a` with a[rows] = values (NumPy array or tensor, `values` converted to a's kind)."""
    if isinstance(values, torch.Tensor) and (_on_host(a) or not isinstance(a, torch.Tensor)):
        values = values.detach().cpu().numpy()
    if _on_host(a):
        return torch.from_numpy(put_rows(a.numpy(), rows, values))
    if isinstance(a, torch.Tensor):
        out = a.clone()
        out[torch.as_tensor(rows, device=a.device)] = torch.as_tensor(values, dtype=a.dtype, device=a.device)
        return out
    out = a.copy()
    out[rows] = values
    return out


def to_host(tree):
    """The inverse of `to_device`: every tensor as a NumPy array (`.cpu()`: no copy on the CPU)."""
    if tree is None:
        return None
    convert = (lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    if isinstance(tree, dict):
        return {k: convert(v) for k, v in tree.items()}
    return type(tree)(*(convert(a) for a in tree))


def split(params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(body, head)."""
    return {k: v for k, v in params.items() if k != "w"}, params["w"]


# Below this many multiply-adds a step runs on one thread: synchronising threads costs more than
# they save, and on a machine whose cores are busy with other work far more (measured on the
# 2-core machine at load 6-14: 13-60 ms a tiny step on two threads, 2 ms on one).
ONE_THREAD_WORK = 2e7


@functools.lru_cache(maxsize=1)
def _controller():
    """threadpoolctl's view of the loaded OpenMP and BLAS pools (torch's among them), inspected
    once; None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def step_threads(work: float) -> Iterator[None]:
    """Within: torch's CPU pools on one thread when the step's `work` (multiply-adds) is small,
    else on `metarep.compute.threads.count()` threads (this process's share of the CPUs). Scoped: the
    pools are restored on exit."""
    from metarep.compute import threads

    controller = _controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1 if work < ONE_THREAD_WORK else threads.count()):
        yield


def step_work(params: MLPParams, tasks) -> float:
    """Multiply-adds of one forward pass over every sample: samples x parameters."""
    samples = tasks.n_tasks * (tasks.X_in.shape[1] + tasks.X_out.shape[1])
    return float(samples) * sum(math.prod(a.shape) for a in params)
