"""A sampler that is not the trainer (sample_dtype != dtype): truncated importance sampling, tested with an injected
mismatch.

When the tokens come from a sampler pi_s that differs from the trainer's pi_old (another precision here, an
inference engine elsewhere), the policy term of each token is weighted by min(pi_old / pi_s, is_cap), a constant
(Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL training"; TRL's token_truncate
with vllm_importance_sampling_clip_max = 3). pi_old is then the trainer's own: at mu = 1 the training forward's
log-probs, at mu > 1 a recomputation.
"""
import copy
import math

import pytest
import torch

from minigrpo.config import make_config
from minigrpo.loss import grpo_loss
from minigrpo.model import build_model, completion_logprobs
from minigrpo.optim import update_policy
from minigrpo.pipeline import check_model
from minigrpo.sampler import Samples, pad_prompts, sample_group
from minigrpo.tokenizer import build_tokenizer, encode

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_weight_scales_each_tokens_gradient_by_hand():
    """At theta = theta_old the clipped term's gradient is -A_i w_t / (|o_i| N) (loss_type grpo): by hand,
    with A = (1, -2), w = ((2, 0.5), (1, 3)), |o_i| = 2, N = 2."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    w = torch.tensor([[2.0, 0.5], [1.0, 3.0]])
    loss, _ = grpo_loss(logp, logp.detach(), torch.tensor([1.0, -2.0]), torch.ones(2, 2), is_weight=w)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.125], [0.5, 1.5]]))


def test_the_kl_term_is_not_weighted():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    args = dict(beta=0.5, ref_logp=ref, kl_estimator="k3")
    plain, _ = grpo_loss(logp, logp.detach(), torch.tensor([0.0]), torch.ones(1, 2), **args)
    weighted, _ = grpo_loss(logp, logp.detach(), torch.tensor([0.0]), torch.ones(1, 2), is_weight=torch.full((1, 2), 3.0),
                            **args)
    assert weighted.item() == pytest.approx(plain.item())     # A = 0: only the KL term, the same either way


@pytest.fixture(scope="module")
def batch():
    """A tiny model with sharp weights, 2 prompts x 4 completions, and non-zero advantages."""
    tok = build_tokenizer()
    cfg = make_config("tiny")
    model = build_model(cfg, tok)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    ids, mask = pad_prompts([encode(tok, p) for p in ("12+34=", "5-7=")], tok.pad_token_id)
    s = sample_group(model.eval(), ids, mask, group_size=4, max_new_tokens=4, eos_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(1))
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.5, -0.5, -0.5, -0.5])
    return model, s, adv


def injected(s: Samples, gap: torch.Tensor) -> Samples:
    """The same tokens, as if a sampler had given them log pi_s = log pi_old - gap."""
    return Samples(s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask,
                   (s.logps - gap) * s.completion_mask, s.entropy, s.truncated)


def step(model, s, adv, **cfg):
    """One SGD update (lr 1, no gradient clipping): returns the Update and the weight change (= -gradient)."""
    cfg = make_config("tiny", grad_clip=0.0, **cfg)
    m = copy.deepcopy(model)
    before = torch.cat([p.detach().flatten() for p in m.parameters()])
    upd = update_policy(m, torch.optim.SGD(m.parameters(), lr=1.0), s, adv, s.completion_mask.float(), cfg)
    return upd, torch.cat([p.detach().flatten() for p in m.parameters()]) - before


def test_an_injected_mismatch_is_corrected_with_the_truncated_weight(batch):
    model, s, adv = batch
    mask = s.completion_mask.float()
    gap = torch.full_like(s.logps, math.log(2.0)) * mask          # pi_old / pi_s = 2 on every token ...
    gap[0, 0] = math.log(10.0)                                    # ... but 10 on one, capped at 3
    upd, delta = step(model, injected(s, gap), adv, sample_dtype="bfloat16")
    # the same update by hand: grpo_loss with the weights 2 (and 3), pi_old = the trainer's log-probs
    m = copy.deepcopy(model).train()
    logp = completion_logprobs(m, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask)
    w = torch.full_like(logp, 2.0)
    w[0, 0] = 3.0
    loss, _ = grpo_loss(logp, logp.detach(), adv, mask, eps_low=0.2, eps_high=0.28, is_weight=w)
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    by_hand = -torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                          for g, p in zip(grads, m.parameters())])
    torch.testing.assert_close(delta, by_hand, rtol=1e-4, atol=1e-6)   # float32 weights: p + d - p
    tokens = mask.sum().item()
    assert upd.stats["is_weight_mean"] == pytest.approx((2 * (tokens - 1) + 3) / tokens, rel=1e-5)
    assert upd.stats["is_capped"] == pytest.approx(1 / tokens, rel=1e-5)
    assert upd.logp_diff_max == pytest.approx(math.log(10.0), rel=1e-5)
    # without the correction the update would be the unweighted one: the weight did change it
    _, plain = step(model, s, adv)
    assert not torch.allclose(delta, plain, rtol=1e-3, atol=1e-6)


def test_a_matching_sampler_is_not_reweighted(batch):
    """With sample_dtype = dtype the sampler is the trainer: mu = 1 takes pi_old from the training forward, so
    the sampler's log-probs do not enter the update at all (an injected gap changes nothing)."""
    model, s, adv = batch
    gap = torch.full_like(s.logps, 0.3) * s.completion_mask
    upd, delta = step(model, injected(s, gap), adv, sample_dtype="float32")
    _, plain = step(model, s, adv)
    torch.testing.assert_close(delta, plain, rtol=0, atol=0)
    assert "is_weight_mean" not in upd.stats


def test_mu_2_takes_pi_old_from_the_trainer_under_a_mismatch(batch):
    """mu > 1: pi_old is recomputed by the trainer (not the sampler's), so the first update's ratio is 1."""
    model, s, adv = batch
    gap = torch.full_like(s.logps, 0.2) * s.completion_mask
    upd, _ = step(model, injected(s, gap), adv, sample_dtype="bfloat16", num_iterations=2)
    assert upd.logp_diff_max == pytest.approx(0.2, rel=1e-4)          # the recompute saw the injected gap
    assert upd.stats["is_weight_mean"] == pytest.approx(math.exp(0.2), rel=1e-4)


def test_bad_sampler_settings_fail_in_one_line(batch):
    model, _, _ = batch
    with pytest.raises(ValueError, match=r"is_cap=0.5 must be >= 1"):
        make_config("tiny", is_cap=0.5)
    with pytest.raises(ValueError, match=r"sample_dtype='int8' is not one of"):
        make_config("tiny", sample_dtype="int8")
    with pytest.raises(ValueError, match=r"sample_dtype=float16 needs a CUDA device"):
        check_model(make_config("tiny", sample_dtype="float16"), model, build_tokenizer(), torch.device("cpu"))
