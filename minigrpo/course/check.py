"""Self-checks for the lessons: compare a number (or array) with a reference and say how close.

In the spirit of nn-zero-to-hero's `cmp()`: a lesson cell ends with

    check("advantage of answer 1", adv[0], -1.06, atol=0.005)

which prints one line ("exact", "close (max diff 0.0012)") and raises
AssertionError when the values disagree, so a notebook test fails loudly.
"""
from __future__ import annotations

import numpy as np


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def check(label: str, got, expected, atol: float = 1e-6, rtol: float = 0.0) -> None:
    """Print "label: exact" or "label: close (max diff d)"; raise AssertionError if not within tolerance.

    `got` and `expected` are numbers, lists, numpy arrays or torch tensors of the same shape.
    """
    g, e = _as_array(got), _as_array(expected)
    if g.shape != e.shape:
        raise AssertionError(f"{label}: shape {g.shape} != expected {e.shape}")
    diff = float(np.max(np.abs(g - e))) if g.size else 0.0
    if np.array_equal(g, e):
        line = f"{label}: exact"
    elif np.allclose(g, e, atol=atol, rtol=rtol):
        line = f"{label}: close (max diff {diff:.1e})"
    else:
        raise AssertionError(f"{label}: MISMATCH, got {np.round(g, 6).tolist()}, "
                             f"expected {np.round(e, 6).tolist()} (max diff {diff:.3g})")
    print(line)  # returns None, so a cell ending in check(...) shows the line once
