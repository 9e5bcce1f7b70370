"""The GRPO family's loss variants (lesson 9): GSPO's sequence ratio, CISPO, two-sided clipping, the bias-corrected KL.

Numbers by hand from the papers' formulas, then parity with TRL's own code: `trl_loss` below is the loss of
`GRPOTrainer._compute_loss` (trl/trainer/grpo_trainer.py at commit f2cd577, 2026-07-24), line for line for one
process with no gradient accumulation, so that TRL's `num_items_in_batch` is the batch's token count.
"""
import itertools
import math

import pytest
import torch

from minigrpo.loss import clipped_surrogate, grpo_loss, importance_ratio
from minigrpo.reward import soft_overlong_punishment


def trl_loss(per_token_logps, old_per_token_logps, advantages, mask, *, loss_type, importance_sampling_level,
             epsilon_low, epsilon_high, delta=None, beta=0.0, ref_per_token_logps=None,
             use_bias_correction_kl=False, max_completion_length=None):
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    log_ratio = per_token_logps - old_per_token_logps
    if importance_sampling_level == "token":
        log_importance_weights = log_ratio
    else:
        log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    if beta != 0.0:
        per_token_kl = (torch.exp(ref_per_token_logps - per_token_logps)
                        - (ref_per_token_logps - per_token_logps) - 1)
        if use_bias_correction_kl:
            per_token_kl = per_token_kl * coef_1
    if loss_type == "cispo":
        clamped_ratios = torch.clamp(coef_1, max=epsilon_high).detach()
        per_token_loss = -clamped_ratios * advantages * per_token_logps
    else:
        coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
        if delta is not None:
            coef_1 = torch.clamp(coef_1, max=delta)
        per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)   # cispo, dapo: num_items_in_batch


def batch(seed, N=6, T=5, spread=0.4):
    g = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(N, T, generator=g) * 3).requires_grad_()
    old = logp.detach() + spread * torch.randn(N, T, generator=g)
    ref = logp.detach() + 0.3 * torch.randn(N, T, generator=g)
    lengths = torch.randint(1, T + 1, (N,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    adv = torch.randn(N, generator=g)
    return logp, old, ref, mask, adv


CASES = [dict(loss_type=lt, level=lv, delta=d, beta=b, bias=bc)
         for lt, lv, d, b, bc in itertools.product(("grpo", "bnpo", "dr_grpo", "dapo", "cispo"), ("token", "sequence"),
                                                    (None, 1.6), (0.0, 0.04), (False, True))
         if not (lt == "cispo" and d is not None) and not (b == 0.0 and bc)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_loss_and_gradient_equal_trls(case):
    for seed in range(3):
        logp, old, ref, mask, adv = batch(seed)
        eps_low, eps_high = 0.2, (1.5 if case["loss_type"] == "cispo" else 0.28)   # TRL's cispo cap is epsilon_high
        theirs = trl_loss(logp, old, adv, mask, loss_type=case["loss_type"], importance_sampling_level=case["level"],
                          epsilon_low=eps_low, epsilon_high=eps_high, delta=case["delta"], beta=case["beta"],
                          ref_per_token_logps=ref, use_bias_correction_kl=case["bias"], max_completion_length=5)
        (g_theirs,) = torch.autograd.grad(theirs, logp)
        ours, _ = grpo_loss(logp, old, adv, mask, eps_low=eps_low, eps_high=0.28, beta=case["beta"],
                            ref_logp=ref if case["beta"] else None, loss_type=case["loss_type"],
                            max_completion_length=5, importance_sampling_level=case["level"],
                            delta=case["delta"] or 0.0, cispo_max=1.5, use_bias_correction_kl=case["bias"])
        (g_ours,) = torch.autograd.grad(ours, logp)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(g_ours * mask, g_theirs * mask, atol=1e-6, rtol=1e-5)
        assert torch.all(g_ours[mask == 0] == 0)   # padding never gets a gradient


def test_the_parity_test_can_tell_the_variants_apart():
    """The TRL oracle is not blind: changing any one option changes its loss on these batches."""
    logp, old, ref, mask, adv = batch(0)
    base = dict(loss_type="grpo", importance_sampling_level="token", epsilon_low=0.2, epsilon_high=0.28)
    ref_loss = trl_loss(logp, old, adv, mask, **base)
    for change in (dict(importance_sampling_level="sequence"), dict(delta=1.2), dict(loss_type="dapo"),
                   dict(loss_type="cispo", epsilon_high=1.5)):
        assert not torch.isclose(trl_loss(logp, old, adv, mask, **{**base, **change}), ref_loss), change


def test_gspo_one_ratio_per_sequence_by_hand():
    # log-ratios 0.3 and -0.1: the sequence's ratio is exp(mean) = exp(0.1); the padded token does not count
    logp = torch.tensor([[0.3, -0.1, 7.0]], requires_grad=True)
    old, mask = torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]])
    r = importance_ratio(torch.where(mask.bool(), logp, 0.0), old, mask, "sequence")
    assert r.shape == (1, 1) and r.item() == pytest.approx(math.exp(0.1))
    # A = +1, eps_high = 0.2: 1.1052 is inside the range, the loss is -s, each token's gradient -s/2
    loss, stats = grpo_loss(logp, old, torch.ones(1), mask, eps_high=0.2, importance_sampling_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-math.exp(0.1))
    torch.testing.assert_close(logp.grad, torch.tensor([[-math.exp(0.1) / 2] * 2 + [0.0]]))
    assert stats["clip_high"] == 0.0 and stats["ratio_mean"] == pytest.approx(math.exp(0.1))
    # eps_high = 0.05: the whole sequence is clipped at 1.05, no gradient for either token
    logp.grad = None
    loss, stats = grpo_loss(logp, old, torch.ones(1), mask, eps_high=0.05, importance_sampling_level="sequence")
    loss.backward()
    assert loss.item() == pytest.approx(-1.05) and torch.all(logp.grad == 0) and stats["clip_high"] == 1.0
    # token level instead: exp(0.3) = 1.35 is clipped at 1.05, exp(-0.1) = 0.905 is not
    logp.grad = None
    grpo_loss(logp, old, torch.ones(1), mask, eps_high=0.05)[0].backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -math.exp(-0.1) / 2, 0.0]]))


def test_cispo_by_hand():
    # ratios e^0.3 = 1.35 and e^2 = 7.39, cap 5: weights (1.35, 5), detached; token mean over 2 tokens
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.3, -4.0]])
    loss, stats = grpo_loss(logp, old, torch.ones(1), torch.ones(1, 2), loss_type="cispo", cispo_max=5.0)
    loss.backward()
    w = (math.exp(0.3), 5.0)
    assert loss.item() == pytest.approx(-(w[0] * -1.0 + w[1] * -2.0) / 2)
    torch.testing.assert_close(logp.grad, torch.tensor([[-w[0] / 2, -w[1] / 2]]))   # sg(w) A / tokens
    assert stats["clip_high"] == 0.5 and stats["clip_low"] == 0.0


def test_two_sided_clipping_by_hand():
    # A = -1 and r = 3: one-sided clipping keeps -3 (gradient 3: the loss r grows without bound);
    # delta = 2 caps the ratio: -2, and no gradient
    logp, old = torch.tensor([[math.log(3.0)]], requires_grad=True), torch.zeros(1, 1)
    loss, _ = grpo_loss(logp, old, -torch.ones(1), torch.ones(1, 1), eps_high=0.28)
    (g,) = torch.autograd.grad(loss, logp)
    assert loss.item() == pytest.approx(3.0) and g.item() == pytest.approx(3.0)
    loss, _ = grpo_loss(logp, old, -torch.ones(1), torch.ones(1, 1), eps_high=0.28, delta=2.0)
    (g,) = torch.autograd.grad(loss, logp)
    assert loss.item() == pytest.approx(2.0) and g.item() == 0.0
    # for A > 0 delta changes nothing: the clip at 1 + eps_high already binds first
    assert clipped_surrogate(torch.tensor(3.0), 1.0, 0.2, 0.28, delta=2.0).item() == pytest.approx(1.28)


def test_bias_corrected_kl_by_hand():
    # logp -1, old -1.2 (r = e^0.2), ref -1.5: k3 = e^-0.5 + 0.5 - 1 = 0.10653, weighted by r: 0.13012
    args = (torch.tensor([[-1.0]]), torch.tensor([[-1.2]]), torch.zeros(1), torch.ones(1, 1))
    ref = torch.tensor([[-1.5]])
    k3 = math.exp(-0.5) + 0.5 - 1
    assert grpo_loss(*args, beta=0.1, ref_logp=ref)[1]["kl"] == pytest.approx(k3)
    assert grpo_loss(*args, beta=0.1, ref_logp=ref, use_bias_correction_kl=True)[1]["kl"] == pytest.approx(
        k3 * math.exp(0.2))


def test_soft_overlong_punishment_as_dapo_and_trl():
    # DAPO eq. 13 with L_max = 100, L_cache = 20 (TRL's docstring example: 90 tokens -> -0.5)
    assert soft_overlong_punishment([50, 80, 81, 90, 100, 101], 100, 20) == [0.0, 0.0, -0.05, -0.5, -1.0, -1.0]


@pytest.mark.parametrize("bad, words", [(dict(delta=0.5), "delta=0.5 must be 0 (off) or > 1"),
                                        (dict(cispo_max=0.0), "cispo_max=0.0 must be > 0"),
                                        (dict(importance_sampling_level="group"), "is not one of: token, sequence")])
def test_bad_variant_arguments(bad, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), **bad)
