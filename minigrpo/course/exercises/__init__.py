"""Checkers for the lessons' exercises, one module per lesson (lesson01.py, ...).

A lesson's exercise cell holds a `# YOUR CODE HERE` stub; the cell after it
calls the lesson's checker, which says "not done yet" while the stub returns
None and raises AssertionError on a wrong answer. The worked solutions live
apart, in notebooks/solutions/, and are run by the same checkers in the tests.
"""
import torch


def not_done(name: str, result) -> bool:
    """Print the stub message and return True if the reader's function returned None."""
    if result is None:
        print(f"{name}: not done yet (the function returns None)")
        return True
    return False


def as_float64(x) -> torch.Tensor:
    """A number, list, numpy array or tensor as a float64 tensor (for comparisons)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)
