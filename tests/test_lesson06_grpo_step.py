"""Lesson 06, exercises 4 and 5 (the GRPO step and the mu updates, written from the engine's pieces): the checkers
accept the solutions, say "not done yet" for the stubs, and reject the plausible wrong answers.

The solutions are exec'd from the solutions notebook. The wrong answers are variants of an implementation written
here, each with one named bug; the unbugged variant must pass too, so that each rejection is the bug's.
"""
import copy
import math
import os

import numpy as np
import pytest
import torch

from minigrpo.course.exercises import lesson06
from minigrpo.model import completion_logprobs
from minigrpo.optim import optimizer_step
from minigrpo.sampler import rollout

from nbcells import code_cells, function_defined, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "06_train_arithmetic.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "06_train_arithmetic_solutions.ipynb")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def solution(name):
    return function_defined(SOLUTIONS, name, {"torch": torch, "math": math, "np": np})


# ------------------------------------------------------------------ the solutions and the stubs


def test_checkers_accept_the_solutions(capsys):
    lesson06.check_my_grpo_step(solution("my_grpo_step"))
    lesson06.check_my_mu_updates(solution("my_mu_updates"))
    out = capsys.readouterr().out
    assert out.count(": correct") == 2 and "not done" not in out


def test_checkers_say_not_done_for_stubs(capsys):
    lesson06.check_my_grpo_step(lambda policy, opt, tok, records, reward_fn, cfg, generator: None)
    lesson06.check_my_mu_updates(lambda policy, opt, batch, cfg: None)
    assert capsys.readouterr().out.count("not done yet") == 2


@pytest.mark.parametrize("name", ["my_grpo_step", "my_mu_updates"])
def test_the_lesson_has_stub_and_checker_and_the_solutions_do_not(name):
    stubs = [source(c) for c in code_cells(LESSON) if source(c).startswith(f"def {name}(")]
    assert len(stubs) == 1 and "# YOUR CODE HERE" in stubs[0] and "return None" in stubs[0]
    assert sum(f"lesson06.check_{name}({name})" in source(c) for c in code_cells(LESSON)) == 1
    assert sum(f"lesson06.check_{name}({name})" in source(c) for c in code_cells(SOLUTIONS)) == 1
    assert "# YOUR CODE HERE" not in source(next(c for c in code_cells(SOLUTIONS)
                                                 if source(c).startswith(f"def {name}(")))


# ------------------------------------------------------------------ the checkers' world can show each bug


def test_the_world_has_what_the_wrong_answers_need():
    """Lengths that differ (token mean != per-sequence mean), a group of equal rewards (0/0), groups whose stds
    differ (normalisation within the group != a common scale), and a mu batch whose later updates clip."""
    s, adv = lesson06.mu_batch()
    G = lesson06.mu_config().group_size
    lengths = s.completion_mask.sum(1)
    assert len(set(lengths.tolist())) >= 2, lengths
    tok, start = lesson06.step_world()
    cfg = lesson06.step_config()
    ro = rollout(copy.deepcopy(start), tok, lesson06.STEP_RECORDS, lesson06.step_reward, cfg,
                 torch.Generator().manual_seed(lesson06.SEED))
    r = ro.rewards.view(-1, G)
    std = r.std(1)
    assert std[0] == 0                                       # the first prompt's reward is constant
    assert len({round(x, 6) for x in std[1:].tolist() if x > 0}) >= 2, r
    assert len(set(ro.samples.completion_mask.sum(1).tolist())) >= 2
    stats, _ = lesson06.engine_mu_updates()
    assert stats[0]["ratio_mean"] == 1.0 and stats[0]["clip_low"] == stats[0]["clip_high"] == 0.0
    assert abs(stats[-1]["ratio_mean"] - 1) > 1e-2
    assert stats[-1]["clip_low"] + stats[-1]["clip_high"] > 0.05, stats


# ------------------------------------------------------------------ exercise 4: wrong answers


def grpo_step_variant(bug=None):
    """One GRPO step (mu = 1) written out here, with one named bug."""
    def step(policy, opt, tok, records, reward_fn, cfg, generator):
        ro = rollout(policy, tok, records, reward_fn, cfg, generator)
        s = ro.samples
        r = ro.rewards.view(-1, cfg.group_size)                                     # (B, G)
        centred = r - r.mean(1, keepdim=True)                                       # (B, G)
        std = r.std(1, keepdim=True, correction=0 if bug == "population std" else 1)   # (B, 1)
        if bug == "no std":
            adv = centred.reshape(-1)
        elif bug == "0/0 for equal rewards":
            adv = (centred / (std + cfg.std_eps)).reshape(-1)
        else:
            adv = torch.where(std > 0, centred / (std + cfg.std_eps), torch.zeros_like(centred)).reshape(-1)
        logp = completion_logprobs(policy, s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask,
                                   cfg.temperature)                                 # (N, T)
        ratio = torch.exp(logp - logp.detach())
        A = adv.unsqueeze(1)
        pick = torch.maximum if bug == "clip on the wrong side" else torch.minimum
        objective = pick(ratio * A, ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high) * A)   # (N, T)
        m = s.completion_mask.to(objective.dtype)
        if bug == "token mean":
            loss = -(objective * m).sum() / m.sum()
        else:
            loss = -((objective * m).sum(1) / m.sum(1)).mean()
        if bug == "sign flipped":
            loss = -loss
        if bug == "no gradient clip":
            opt.zero_grad()
            loss.backward()
            opt.step()
        else:
            optimizer_step(policy, opt, loss, cfg.grad_clip)
        return loss.item()
    return step


@pytest.mark.parametrize("bug", [None, "clip on the wrong side"])
def test_grpo_step_checker_accepts(bug, capsys):
    """The variant without a bug passes; so does clipping on the wrong side, which mu = 1 cannot show: the ratio is
    exactly 1, inside the clip range, and min and max of two equal terms pass the same gradient (exercise 5 sees it)."""
    lesson06.check_my_grpo_step(grpo_step_variant(bug))
    assert ": correct" in capsys.readouterr().out


@pytest.mark.parametrize("bug, says", [
    ("no std", "differ from the engine's"),
    ("population std", r"\+1\.155 x the engine's"),        # sqrt(4/3): the same direction, a longer step
    ("token mean", "differ from the engine's"),
    ("sign flipped", r"-1\.000 x the engine's"),
    ("0/0 for equal rewards", "differ from the engine's"),
    ("no gradient clip", "half the gradient norm"),
])
def test_grpo_step_checker_rejects(bug, says):
    with pytest.raises(AssertionError, match=f"my_grpo_step.*{says}"):
        lesson06.check_my_grpo_step(grpo_step_variant(bug))


# ------------------------------------------------------------------ exercise 5: wrong answers


def mu_updates_variant(bug=None):
    """cfg.num_iterations clipped updates on one batch, written out here, with one named bug."""
    def updates(policy, opt, batch, cfg):
        args = [batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]
        m = batch["completion_mask"].to(torch.float32)                              # (N, T)
        A = batch["adv"].unsqueeze(1)                                               # (N, 1)
        out = []
        for _ in range(cfg.num_iterations):
            logp = completion_logprobs(policy, *args, cfg.temperature)             # (N, T)
            if bug == "old log-probs recomputed":
                with torch.no_grad():
                    old = completion_logprobs(policy, *args, cfg.temperature)
            elif bug == "new log-probs detached as old":
                old = logp.detach()
            else:
                old = batch["old_logp"]
            ratio = torch.exp(logp - old)
            clipped = ratio.clamp(1 - cfg.eps_low, 1 + cfg.eps_high) * A
            if bug == "no clip":
                objective = ratio * A
            elif bug == "clip on the wrong side":
                objective = torch.maximum(ratio * A, clipped)
            else:
                objective = torch.minimum(ratio * A, clipped)
            if bug == "token mean":
                loss = -(objective * m).sum() / m.sum()
            else:
                loss = -((objective * m).sum(1) / m.sum(1)).mean()
            r = ratio.detach()
            n = m.numel() if bug == "statistics over padding too" else m.sum().item()
            out.append({"loss": loss.item(), "ratio_mean": (r * m).sum().item() / n,
                        "clip_low": (((A < 0) & (r < 1 - cfg.eps_low)) * m).sum().item() / n,
                        "clip_high": (((A > 0) & (r > 1 + cfg.eps_high)) * m).sum().item() / n})
            optimizer_step(policy, opt, loss, cfg.grad_clip)
        return out
    return updates


def test_mu_updates_checker_accepts_the_variant_without_a_bug(capsys):
    lesson06.check_my_mu_updates(mu_updates_variant())
    assert ": correct" in capsys.readouterr().out


@pytest.mark.parametrize("bug", ["old log-probs recomputed", "new log-probs detached as old", "no clip",
                                 "clip on the wrong side", "token mean", "statistics over padding too"])
def test_mu_updates_checker_rejects(bug):
    with pytest.raises(AssertionError, match="my_mu_updates"):
        lesson06.check_my_mu_updates(mu_updates_variant(bug))


def test_mu_updates_checker_rejects_a_wrong_shape():
    with pytest.raises(AssertionError, match="list of cfg.num_iterations = 3 dicts"):
        lesson06.check_my_mu_updates(lambda policy, opt, batch, cfg: mu_updates_variant()(policy, opt, batch, cfg)[-1])
