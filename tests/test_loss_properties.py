"""Properties of the clipped objective, the KL estimators and the loss aggregations, over random inputs (hypothesis).

- the clipped surrogate never exceeds the unclipped r * A, token by token and after aggregation;
- the k3 (and k2) KL estimate is never negative;
- padding: appending masked columns, whatever garbage they hold, changes no loss_type that normalises by real
  tokens ("grpo", "bnpo", "dapo", "seq_sum", and "dr_grpo" with a fixed L); "dr_grpo" with L = T (the default)
  is divided by the padded length, as Dr. GRPO's constant is;
- very large and very small log-ratios (|log r| up to 80, e^80 ~ 5.5e34 in float32) keep the loss and its
  gradient finite.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrpo.loss import aggregate, clipped_surrogate, grpo_loss, kl_estimate

LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "seq_sum")


@st.composite
def batches(draw, max_log_ratio=3.0):
    """A random batch: logp, old_logp (N, T), advantages (N,), mask (N, T), in float64."""
    n, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 5                       # (N, T)
    logp = old + (torch.rand(n, t, generator=g, dtype=torch.float64) * 2 - 1) * max_log_ratio
    adv = torch.randn(n, generator=g, dtype=torch.float64) * 2                          # (N,)
    mask = (torch.rand(n, t, generator=g) < 0.8).to(torch.float64)                      # (N, T)
    return logp, old, adv, mask


eps = st.floats(0.0, 0.9)


@settings(max_examples=200, deadline=None)
@given(st.floats(-10, 10), st.floats(-5, 5), eps, st.floats(0.0, 2.0))
def test_clipped_never_exceeds_unclipped_per_token(log_r, adv, eps_low, eps_high):
    r = torch.tensor(log_r, dtype=torch.float64).exp()
    assert clipped_surrogate(r, adv, eps_low, eps_high) <= r * adv


@settings(max_examples=100, deadline=None)
@given(batches(), eps, st.floats(0.0, 2.0), st.sampled_from(LOSS_TYPES))
def test_clipped_loss_never_below_unclipped_loss(batch, eps_low, eps_high, loss_type):
    """The loss is minus the objective: clipping can only make the objective smaller, the loss larger."""
    logp, old, adv, mask = batch
    clipped, _ = grpo_loss(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, loss_type=loss_type)
    unclipped = aggregate(-(logp - old).exp() * adv[:, None], mask, loss_type)
    assert clipped >= unclipped - 1e-12


@settings(max_examples=200, deadline=None)
@given(st.floats(-50, 0), st.floats(-50, 0), st.sampled_from([torch.float32, torch.float64]))
def test_k3_and_k2_are_never_negative(logp, ref, dtype):
    lp, rf = torch.tensor([logp], dtype=dtype), torch.tensor([ref], dtype=dtype)
    assert kl_estimate(lp, rf, "k3").item() >= 0.0
    assert kl_estimate(lp, rf, "k2").item() >= 0.0


@settings(max_examples=100, deadline=None)
@given(batches(), st.integers(1, 5), st.sampled_from([50.0, -1e9, float("-inf"), float("nan")]))
def test_padding_changes_only_the_loss_types_that_count_it(batch, pad, garbage):
    logp, old, adv, mask = batch
    n, t = logp.shape
    fill = torch.full((n, pad), garbage, dtype=torch.float64)
    logp_p, old_p = torch.cat([logp, fill], 1), torch.cat([old, fill], 1)                # (N, T + pad)
    mask_p = torch.cat([mask, torch.zeros(n, pad, dtype=torch.float64)], 1)
    for loss_type in LOSS_TYPES:
        for L in ((None, t) if loss_type == "dr_grpo" else (None,)):
            kw = dict(eps_low=0.2, eps_high=0.28, loss_type=loss_type, max_completion_length=L)
            a = logp.clone().requires_grad_()
            b = logp_p.clone().requires_grad_()
            la, _ = grpo_loss(a, old, adv, mask, **kw)
            lb, _ = grpo_loss(b, old_p, adv, mask_p, **kw)
            la.backward()
            lb.backward()
            assert torch.isfinite(lb) and torch.isfinite(b.grad).all()
            if loss_type == "dr_grpo" and L is None:  # L = T: the padded batch divides by T + pad
                assert torch.allclose(lb, la * t / (t + pad), atol=1e-12)
            else:
                assert torch.allclose(lb, la, atol=1e-12), loss_type
                assert torch.allclose(b.grad[:, :t], a.grad, atol=1e-12) and (b.grad[:, t:] == 0).all()


@settings(max_examples=100, deadline=None)
@given(batches(max_log_ratio=80.0), st.sampled_from(LOSS_TYPES), st.floats(0.0, 0.1))
def test_large_log_ratios_keep_loss_and_gradient_finite(batch, loss_type, beta):
    logp, old, adv, mask = (x.float() for x in batch)
    logp = logp.requires_grad_()
    loss, stats = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, beta=beta,
                            ref_logp=old if beta else None, loss_type=loss_type)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    assert all(v == v for v in stats.values())  # no NaN in the diagnostics


def test_empty_completions_give_zero_loss_and_gradient():
    """Rows whose completion has no token (all masked) add nothing, for every loss_type."""
    logp = torch.zeros(2, 3, requires_grad=True)
    for loss_type in LOSS_TYPES:
        loss, stats = grpo_loss(logp, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.zeros(2, 3),
                                loss_type=loss_type)
        loss.backward()
        assert loss.item() == 0.0 and (logp.grad == 0).all() and stats["tokens"] == 0
        logp.grad = None
