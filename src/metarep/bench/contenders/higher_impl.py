"""`higher` contender: per-task ``higher.innerloop_ctx`` with an SGD inner
optimizer on the head only (ANIL), as in learn2learn/higher style code.

Thread count is left at the library default; nothing global is changed.
"""

from __future__ import annotations

import numpy as np

from ._common import as_dtype, check_method, check_shapes, missing


def make_higher_loop(X_in, y_in, X_out, y_out, alpha, method, dtype):
    """Per-task loop with higher.innerloop_ctx (track_higher_grads=False for FO-ANIL)."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise missing("torch", "higher_loop", "pip install torch==2.13.0") from exc
    try:
        import higher
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise missing("higher", "higher_loop", "pip install higher==0.2.1") from exc

    first_order = check_method(method)
    dt = as_dtype(dtype)
    N, _, _, _ = check_shapes(X_in, y_in, X_out, y_out)
    tdt = torch.float64 if dt == np.float64 else torch.float32
    X_in, y_in, X_out, y_out = (torch.as_tensor(np.asarray(a), dtype=tdt)
                                for a in (X_in, y_in, X_out, y_out))

    class LinearRep(torch.nn.Module):
        """f(x) = x^T B w with representation B (d x k) and head w (k)."""

        def __init__(self, d, k):
            super().__init__()
            self.B = torch.nn.Parameter(torch.zeros(d, k, dtype=tdt))
            self.w = torch.nn.Parameter(torch.zeros(k, dtype=tdt))

        def forward(self, X):
            return X @ (self.B @ self.w)

    def mse(pred, y):
        return 0.5 * torch.mean((pred - y) ** 2)

    model = None
    inner_opt = None

    def step(B, w):
        nonlocal model, inner_opt
        B = np.asarray(B)
        w = np.asarray(w)
        if model is None or tuple(model.B.shape) != B.shape:
            model = LinearRep(*B.shape)
            inner_opt = torch.optim.SGD([model.w], lr=alpha)  # head only (ANIL)
        with torch.no_grad():
            model.B.copy_(torch.as_tensor(B, dtype=tdt))
            model.w.copy_(torch.as_tensor(w, dtype=tdt))
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        total = 0.0
        for i in range(N):
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                                      track_higher_grads=not first_order) as (fmodel, diffopt):
                diffopt.step(mse(fmodel(X_in[i]), y_in[i]))
                outer = mse(fmodel(X_out[i]), y_out[i])
                if first_order:
                    # gradients at the adapted (detached) weights, applied to
                    # the initial ones
                    gB, gw = torch.autograd.grad(outer, fmodel.parameters())
                    model.B.grad += gB
                    model.w.grad += gw
                else:
                    outer.backward()  # accumulates into model.B.grad, model.w.grad
                total += outer.item()
        grad_B, grad_w = model.B.grad, model.w.grad
        assert grad_B is not None and grad_w is not None     # set above, accumulated into
        return ((grad_B / N).numpy(), (grad_w / N).numpy(),
                np.asarray(total / N, dtype=dt))

    return step
