"""metarep's own step: `fo_anil_gradient` / `anil_gradient` on one kernel backend."""

from __future__ import annotations

import numpy as np

from ._common import as_dtype, check_method, check_shapes, missing


def _gradient_function(method: str):
    if check_method(method):
        from metarep.methods.fo_anil import fo_anil_gradient
        return fo_anil_gradient
    from metarep.methods.anil import anil_gradient
    return anil_gradient


def make_metarep(X_in, y_in, X_out, y_out, alpha, method, dtype, *, backend: str | None = None):
    """metarep's FO-ANIL / exact ANIL gradient with the kernel backend ``backend``.

    ``backend`` is ``"numba"``, ``"numpy"`` or None (the active one). The backend is selected
    for the duration of each call and the previous one restored afterwards.
    """
    from metarep import kernels
    from metarep.params import Params
    from metarep.tasks import Tasks

    if backend is not None and backend not in kernels.available_backends():
        raise missing(backend, f"metarep[{backend}]", "pip install 'metarep[fast]'")
    gradient = _gradient_function(method)
    dt = as_dtype(dtype)
    check_shapes(X_in, y_in, X_out, y_out)
    tasks = Tasks(*(np.ascontiguousarray(a, dtype=dt) for a in (X_in, y_in, X_out, y_out)))
    alpha = float(alpha)

    def step(B, w):
        params = Params(np.asarray(B, dtype=dt), np.asarray(w, dtype=dt))
        previous = kernels.backend()
        switch = backend is not None and backend != previous
        if switch:
            kernels.set_backend(backend)
        try:
            with kernels.step_threads():          # as the runner steps: BLAS off the kernel's cores
                grads, loss = gradient(params, tasks, alpha=alpha)
        finally:
            if switch:
                kernels.set_backend(previous)
        return grads.B, grads.w, np.asarray(loss, dtype=dt)

    return step
