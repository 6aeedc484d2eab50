"""The four meta-learning methods on the network (MATH 3 with phi(X) for X B): one outer
gradient (metarep.nonlinear.meta, torch) in four configurations. torch is imported when a
gradient is first taken, so registering these methods needs only NumPy."""

from __future__ import annotations

from metarep.methods.base import Method

TRAIN_KEYS = ("alpha", "inner_steps")


def meta_gradient(params, tasks, *, net, alpha: float, inner_steps: int = 1, adapt_body: bool, exact: bool):
    """(gradient as MLPParams, mean outer loss): see metarep.nonlinear.meta."""
    from metarep.nonlinear.meta import meta_gradient as gradient

    return gradient(params, tasks, net=net, alpha=alpha, inner_steps=inner_steps, adapt_body=adapt_body,
                    exact=exact)


def check_config(config) -> None:
    """What the network's methods need (torch; a CUDA device when asked for) and do not take."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise ValueError("model.arch = \"mlp\" needs torch: pip install -e '.[mlp]'")
    if config.train.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("train.device = \"cuda\" but torch sees no CUDA device here: use \"cpu\" or \"auto\"")
    if config.train.chunk_tasks:
        raise ValueError("train.chunk_tasks is not used with model.arch = \"mlp\": leave it at 0 and lower "
                         "train.tasks (or use tasks = \"online\") to bound the memory")


def mlp_meta_method(name: str, summary: str, *, adapt_body: bool, exact: bool, relative_cost: float) -> Method:
    """The Method for one (what the inner loop adapts, which derivative) configuration."""

    def gradient(params, tasks, *, net, alpha: float, inner_steps: int = 1):
        return meta_gradient(params, tasks, net=net, alpha=alpha, inner_steps=inner_steps, adapt_body=adapt_body,
                             exact=exact)

    gradient.__doc__ = f"{name} outer gradient of the network over N tasks: (MLPParams, mean outer loss)."
    gradient.per_task_body = adapt_body  # type: ignore[attr-defined]  # read by the memory estimate
    return Method(
        name=name, arch="mlp", summary=summary,
        adapts="every layer and the head" if adapt_body else "head",
        train_keys=TRAIN_KEYS, features="phi(X)", relative_cost=relative_cost, gradient=gradient, check=check_config,
        cost=("O(s N m P): s + 1 forward and backward passes per task, P the number of parameters, "
              "with per-task copies of every layer (N P memory)" if adapt_body
              else "O(N m P) forward over every sample, O(N m_out P) backward, O(s N m k') for the head steps"),
    )
