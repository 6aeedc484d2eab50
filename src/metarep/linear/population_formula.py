"""The exact infinite-task FO-ANIL step of one run (MATH 4), as array code that NumPy runs as
it is and numba compiles unchanged (`metarep.compute._compiled.population_units`): the one fast form
of the population step, used by `metarep.linear.population` for single runs and batches alike.

With g = B^T B* mu*, e = B^T E[v] = B^T B w - g (E[v] = B w - B* mu*), E[w_i] = w - alpha e,
c = (tr V + sigma^2) / m_in with tr V = |E[v]|^2 + tr Sigma*, and T = B^T B* Sigma* B*^T B,
MATH 4's moments of the adapted heads regroup to

    E[w_i w_i^T] = E[w_i] E[w_i]^T + alpha^2 ( e e^T / m_in + (1 + 1/m_in) T + c B^T B ),
    B* E[w*_i w_i^T] = B* mu* (w - alpha B^T B w)^T + alpha B* M* B*^T B,

so that the gradient and the expected outer loss are

    grad_w = B^T B E[w_i] - g,
    grad_B = B E[w_i w_i^T] - B* E[w*_i w_i^T],
    risk   = <B^T B, E[w_i w_i^T]> - 2 (w - alpha B^T B w) . g - 2 alpha <M*, B*^T B B^T B*> + tr M*,
    loss   = (risk + sigma^2) / 2.

Per run this costs two d x k' x k' products (B^T B and B E[w_i w_i^T]) and O(d k' k) more.
The (k', k') and (d, k') sums are made in place by `axpy` and `add_outer`, which numba compiles
as plain loops (`metarep.compute._compiled` gives them their compiled form): its whole-array expressions
measured 5 to 10 times slower than a loop on arrays of this size.
tests/population_reference.py writes MATH 4 as stated (explicit d x d matrices) and the tests
check this form against it, and against Monte Carlo and finite-task gradients.
"""

from __future__ import annotations

import numpy as np


def axpy(out, a, X) -> None:
    """out += a X, in place (2-D arrays of one shape)."""
    out += a * X


def add_outer(out, u, v) -> None:
    """out += u v^T, in place: out (p, q), u (p,), v (q,)."""
    out += np.outer(u, v)


def run_step(B, w, alpha, inv_m, Bs, mu, Sig, M, b, BsM, tr_sig, tr_m, s2,
             out_B, out_w):  # pragma: no cover - also compiled
    """One run: B (d, k'), w (k',), float scalars alpha, inv_m = 1/m_in; the problem's
    B* (d, k), mu* (k,), Sigma* (k, k), M* = Sigma* + mu* mu*^T, b = B* mu* (d,), BsM = B* M*
    (d, k), tr Sigma*, tr M* and sigma^2. Writes the gradient into out_B (d, k'), out_w (k',)
    (the outer optimizer makes the step); returns the loss."""
    BtB = np.dot(B.T, B)                            # (k', k')
    BsTB = np.dot(Bs.T, B)                          # (k, k') = (B^T B*)^T
    g = np.dot(mu, BsTB)                            # B^T B* mu*
    BtBw = np.dot(BtB, w)
    e = BtBw - g
    ev = np.dot(B, w) - b                           # E[v]
    c = (np.dot(ev, ev) + tr_sig + s2) * inv_m
    mean = w - alpha * e                            # E[w_i]
    shrunk = w - alpha * BtBw
    a2 = alpha * alpha
    second = np.dot(BsTB.T, (a2 * (1.0 + inv_m)) * np.dot(Sig, BsTB))     # E[w_i w_i^T], in steps
    axpy(second, a2 * c, BtB)
    add_outer(second, mean, mean)
    add_outer(second, (a2 * inv_m) * e, e)
    grad_w = np.dot(BtB, mean) - g
    risk = (np.dot(BtB.ravel(), second.ravel()) - 2.0 * np.dot(shrunk, g)
            - 2.0 * alpha * np.dot(M.ravel(), np.dot(BsTB, BsTB.T).ravel()) + tr_m)
    out_B[:] = np.dot(B, second)                    # grad_B
    axpy(out_B, -alpha, np.dot(BsM, BsTB))
    add_outer(out_B, -b, shrunk)
    out_w[:] = grad_w
    return 0.5 * (risk + s2)
