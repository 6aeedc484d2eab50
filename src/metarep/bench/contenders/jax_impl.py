"""JAX contender: jax.jit(jax.value_and_grad(task-mean of jax.vmap(per-task meta-loss))).

For float64 this turns on the global ``jax_enable_x64`` flag (JAX computes in float32
otherwise); nothing else global is changed.
"""

from __future__ import annotations

import numpy as np

from ._common import as_dtype, check_method, check_shapes, missing


def make_jax_jit_vmap(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """jit of value_and_grad of the task-mean of vmap(per-task meta-loss).

    The meta-loss is averaged over tasks inside the differentiated function, so the task
    gradients of B are summed by autodiff rather than stacked as an (N, d, k') array and
    averaged afterwards (vmap of grad, several times slower). First order: the inner gradient
    goes through ``jax.lax.stop_gradient``.
    """
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise missing("jax", "jax_jit_vmap", "pip install jax jaxlib") from exc

    first_order = check_method(method)
    dt = as_dtype(dtype)
    check_shapes(X_in, y_in, X_out, y_out)
    if dt == np.float64 and not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)
    data = tuple(jax.device_put(jnp.asarray(np.asarray(a), dtype=dt))
                 for a in (X_in, y_in, X_out, y_out))

    def mse(B, w, X, y):
        return 0.5 * jnp.mean((X @ (B @ w) - y) ** 2)

    def task_meta_loss(B, w, Xi, yi, Xo, yo):
        gw = jax.grad(mse, argnums=1)(B, w, Xi, yi)
        if first_order:
            gw = jax.lax.stop_gradient(gw)
        return mse(B, w - alpha * gw, Xo, yo)

    def meta_loss(B, w, Xi, yi, Xo, yo):
        return jax.vmap(task_meta_loss, in_axes=(None, None, 0, 0, 0, 0))(B, w, Xi, yi, Xo, yo).mean()

    meta_step = jax.jit(jax.value_and_grad(meta_loss, argnums=(0, 1)))

    def step(B, w):
        B = jnp.asarray(np.asarray(B), dtype=dt)
        w = jnp.asarray(np.asarray(w), dtype=dt)
        loss, (gB, gw) = jax.block_until_ready(meta_step(B, w, *data))
        return np.asarray(gB), np.asarray(gw), np.asarray(loss)

    return step
