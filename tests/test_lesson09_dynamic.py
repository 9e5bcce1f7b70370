"""Lesson 09, exercise 4 (DAPO's dynamic sampling as a loop around the sampler): the checker accepts the solution,
says "not done yet" for the stub, and rejects the plausible wrong answers, an endless loop included.

The solution is exec'd from the solutions notebook. The wrong answers are variants of an implementation written
here, each with one named bug; the unbugged variant must pass too, so that each rejection is the bug's.
"""
import itertools
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson09
from minigrpo.sampler import rollout

from nbcells import code_cells, function_defined, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "09_the_grpo_family.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "09_the_grpo_family_solutions.ipynb")
NAME = "dynamic_batch"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------ the solution and the stub


def test_checker_accepts_the_solution(capsys):
    lesson09.check_dynamic_batch(function_defined(SOLUTIONS, NAME, {"torch": torch, "math": math}))
    out = capsys.readouterr().out
    assert f"{NAME}: correct" in out and "not done" not in out


def test_checker_says_not_done_for_the_stub(capsys):
    stub = function_defined(LESSON, NAME, {"torch": torch, "math": math})
    lesson09.check_dynamic_batch(stub)
    assert capsys.readouterr().out.count("not done yet") == 1


def test_the_lesson_has_stub_and_checker_and_the_solutions_do_not():
    stubs = [source(c) for c in code_cells(LESSON) if source(c).startswith(f"def {NAME}(")]
    assert len(stubs) == 1 and "# YOUR CODE HERE" in stubs[0] and "return None" in stubs[0]
    call = f"lesson09.check_{NAME}({NAME})"
    assert sum(call in source(c) for c in code_cells(LESSON)) == 1
    assert sum(call in source(c) for c in code_cells(SOLUTIONS)) == 1
    assert "# YOUR CODE HERE" not in source(next(c for c in code_cells(SOLUTIONS)
                                                 if source(c).startswith(f"def {NAME}(")))
    assert not any("samples_per_informative_group" in source(c) for c in code_cells(LESSON) + code_cells(SOLUTIONS))


# ------------------------------------------------------------------ the checker's world can show each bug


def test_the_world_is_the_layout_worked_out_by_hand():
    """Each round's informative groups are exactly its "V" prompts (a "C" prompt's reward is constant, a "V"
    prompt's 4 completions happen to score differently), so the counts in the checker follow from the layout:
    rounds 0-2 hold 1 + 1 + 3 = 5 informative groups, more than B = 4, found after 3 rounds, before a cap of 4."""
    tok, policy = lesson09.dynamic_world()
    cfg = lesson09.dynamic_config()
    G = cfg.group_size
    generator = torch.Generator().manual_seed(lesson09.DYNAMIC_SEED)
    for k, layout in enumerate(lesson09.DYNAMIC_LAYOUT[:3]):
        records = lesson09.dynamic_records(k)
        assert len(records) == cfg.prompts_per_step == 4
        ro = rollout(policy, tok, records, lesson09.layout_reward, cfg, generator)
        rewards = ro.rewards.view(-1, G)
        informative = "".join("V" if len(set(row.tolist())) > 1 else "C" for row in rewards)
        assert informative == layout, (k, rewards)
    prompts = [r["prompt"] for k in range(len(lesson09.DYNAMIC_LAYOUT)) for r in lesson09.dynamic_records(k)]
    assert len(set(prompts)) == len(prompts)                 # new prompts each round


def test_the_engine_agrees_with_the_counts_by_hand():
    for case, make_reward, cfg, rounds, kept in lesson09._dynamic_cases():
        groups, sampled, engine_rounds = lesson09._engine_dynamic(make_reward(), cfg)
        assert (engine_rounds, len(groups), sampled) == (rounds, kept, rounds * 4 * 4), case
        assert all(len(set(rewards)) > 1 for _, _, rewards in groups), case


# ------------------------------------------------------------------ wrong answers


def dynamic_variant(bug=None):
    """Dynamic sampling written out here, with one named bug."""
    def dynamic_batch(policy, tok, prompts, reward_fn, cfg, generator):
        B, G = cfg.prompts_per_step, cfg.group_size
        cap = cfg.max_sampling_rounds + (bug == "one round too many")
        kept, sampled = [], 0
        for k in itertools.count() if bug == "no round cap" else range(cap):
            if len(kept) >= B and bug != "every round sampled":
                break
            records = prompts(0 if bug == "the same prompts each round" else k)
            ro = rollout(policy, tok, records, reward_fn, cfg, generator)
            sampled += 0 if bug == "kept completions counted" else len(ro.completions)
            for g, row in enumerate(ro.rewards.view(-1, G)):
                informative = bug == "equal groups kept" or bool((row != row[0]).any())
                if informative and (len(kept) < B or bug == "more than B groups"):
                    kept.append((records[g], ro.completions[g * G:(g + 1) * G], row))
                    sampled += G if bug == "kept completions counted" else 0
        return kept, sampled
    return dynamic_batch


def test_checker_accepts_the_variant_without_a_bug(capsys):
    lesson09.check_dynamic_batch(dynamic_variant())
    assert f"{NAME}: correct" in capsys.readouterr().out


@pytest.mark.parametrize("bug, says", [
    ("equal groups kept", "all equal"),
    ("no round cap", "round 3 sampled with max_sampling_rounds = 2.*the loop never ends"),
    ("one round too many", "round 3 sampled with max_sampling_rounds = 2"),
    ("the same prompts each round", r"all from prompts\(0\)"),
    ("more than B groups", "kept 5 groups, more than B = 4"),
    ("kept completions counted", "returned 16 completions sampled, expected 48"),
    ("every round sampled", "4 rounds sampled, expected 3"),
])
def test_checker_rejects(bug, says):
    with pytest.raises(AssertionError, match=f"{NAME}.*{says}"):
        lesson09.check_dynamic_batch(dynamic_variant(bug))


def test_an_endless_loop_that_catches_exceptions_is_still_stopped():
    """The guard is not an Exception: a reader's `except Exception` around the sampler cannot swallow it."""
    def stubborn(policy, tok, prompts, reward_fn, cfg, generator):
        kept, sampled, k = [], 0, 0
        while len(kept) < cfg.prompts_per_step:
            try:
                ro = rollout(policy, tok, prompts(k % 3), reward_fn, cfg, generator)
            except Exception:
                continue
            k += 1
            sampled += len(ro.completions)
        return kept, sampled
    with pytest.raises(AssertionError, match="the loop never ends"):
        lesson09.check_dynamic_batch(stubborn)
