"""metarep's own step: `fo_anil_gradient` / `anil_gradient` on one kernel backend, on all the
threads metarep chooses (its default) or on one thread."""

from __future__ import annotations

import contextlib

import numpy as np

from ._common import as_dtype, check_method, check_shapes, missing


def _gradient_function(method: str):
    if check_method(method):
        from metarep.methods.fo_anil import fo_anil_gradient
        return fo_anil_gradient
    from metarep.methods.anil import anil_gradient
    return anil_gradient


@contextlib.contextmanager
def _threads(n: int | None):
    """Within: as the training loop runs a step (`kernels.step_threads`), and with `n`, the
    kernels and BLAS on at most `n` threads."""
    from metarep.compute import kernels, threads
    with contextlib.ExitStack() as stack:
        stack.enter_context(kernels.step_threads())
        if n is not None:
            stack.enter_context(threads.limited(n))
            controller = kernels._blas_controller()
            if controller is not None:
                stack.enter_context(controller.limit(limits=n, user_api="blas"))
        yield


def make_metarep(X_in, y_in, X_out, y_out, alpha, method, dtype, *, backend: str | None = None,
                 threads: int | None = None):
    """metarep's FO-ANIL / exact ANIL gradient with the kernel backend ``backend``.

    ``backend`` is ``"numba"``, ``"numpy"`` or None (the default one), chosen for each call with
    `kernels.use`; ``threads`` caps the threads of the kernels and of BLAS (None: metarep's choice,
    `metarep.compute.threads`).
    """
    from metarep.compute import kernels
    from metarep.families.tasks import Tasks
    from metarep.linear.params import Params

    if backend is not None and backend not in kernels.available_backends():
        raise missing(backend, f"metarep[{backend}]", "pip install 'metarep[fast]'")
    gradient = _gradient_function(method)
    dt = as_dtype(dtype)
    check_shapes(X_in, y_in, X_out, y_out)
    tasks = Tasks(*(np.ascontiguousarray(a, dtype=dt) for a in (X_in, y_in, X_out, y_out)))
    alpha = float(alpha)

    def step(B, w):
        params = Params(np.asarray(B, dtype=dt), np.asarray(w, dtype=dt))
        with kernels.use(backend), _threads(threads):
            grads, loss = gradient(params, tasks, alpha=alpha)
        return grads.B, grads.w, np.asarray(loss, dtype=dt)

    return step
