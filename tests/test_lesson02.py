"""Lesson 02 (notebooks/02_group_advantage.ipynb): the inline advantage, the exercises and their checkers.

The notebook's four-line `group_advantages_inline` (marker "# inline:
group_advantages") is exec'd and must agree with
minigrpo.advantage.group_advantages on random batches and with the closed
forms of the note's two groups, worked out by hand below. The worked
solutions come from notebooks/solutions/02_group_advantage_solutions.ipynb
("# solution: name"); the checkers must accept them, reject wrong answers and
say "not done yet" to the lesson's stubs.
"""
import json
import math
from pathlib import Path

import pytest
import torch

from minigrpo.advantage import group_advantages
from minigrpo.course.exercises import lesson02

from nbcells import cell_containing, code_cells, exec_cells, source

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "02_group_advantage.ipynb"
SOLUTIONS = ROOT / "notebooks" / "solutions" / "02_group_advantage_solutions.ipynb"
EXERCISES = ("batch_scaled_advantages", "rloo_advantages", "zero_variance_prob")
CHECKERS = {
    "batch_scaled_advantages": lesson02.check_batch_scaled_advantages,
    "rloo_advantages": lesson02.check_rloo_advantages,
    "zero_variance_prob": lesson02.check_zero_variance_prob,
}


def cell_with(path, marker):
    """The source of the one code cell that has `marker` as a line of its own."""
    return cell_containing(path, marker, whole_line=True)


def load(path, marker, name):
    """Exec the marked cell and return the function `name` it defines."""
    return exec_cells(path, marker, whole_line=True)[name]


def inline():
    return load(LESSON, "# inline: group_advantages", "group_advantages_inline")


def solution(name):
    return load(SOLUTIONS, f"# solution: {name}", name)


def t(values):
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------- inline code

# 3.8, 5.2, 6.1: mu = 151/30, deviations (-37, 5, 32)/30, squares 2418/900
#   sample sigma sqrt(1209)/30 -> A = (-37, 5, 32)/sqrt(1209); population sqrt(806)/30 -> (-37, 5, 32)/sqrt(806)
# 6, 8, 9: mu = 23/3, deviations (-5, 1, 4)/3, squares 42/9
#   sample sigma sqrt(7/3) -> A = (-5, 1, 4)/sqrt(21); population sqrt(14)/3 -> (-5, 1, 4)/sqrt(14)
NOTE_GROUPS = [
    ([3.8, 5.2, 6.1], [v / math.sqrt(1209) for v in (-37, 5, 32)], [v / math.sqrt(806) for v in (-37, 5, 32)]),
    ([6.0, 8.0, 9.0], [v / math.sqrt(21) for v in (-5, 1, 4)], [v / math.sqrt(14) for v in (-5, 1, 4)]),
]


@pytest.mark.parametrize("rewards, sample, population", NOTE_GROUPS)
def test_inline_on_the_notes_groups(rewards, sample, population):
    f = inline()
    assert torch.allclose(f(t(rewards), 3), t(sample), atol=1e-12)
    assert torch.allclose(f(t(rewards), 3, std="population"), t(population), atol=1e-12)


def test_notes_printed_numbers():
    f = inline()
    assert [round(a, 2) for a in f(t([3.8, 5.2, 6.1]), 3).tolist()] == [-1.06, 0.14, 0.92]
    # the note's 6/8/9 numbers are population ones (with rounded intermediates: 0.26, 1.06 vs 0.27, 1.07)
    assert [round(a, 2) for a in f(t([6.0, 8.0, 9.0]), 3, std="population").tolist()] == [-1.34, 0.27, 1.07]
    assert [round(a, 2) for a in f(t([6.0, 8.0, 9.0]), 3).tolist()] == [-1.09, 0.22, 0.87]


@pytest.mark.parametrize("B, G", [(1, 2), (4, 3), (7, 8), (3, 16)])
@pytest.mark.parametrize("std", ["sample", "population"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inline_matches_package_on_random_batches(B, G, std, dtype):
    g = torch.Generator().manual_seed(100 * B + G)
    for _ in range(3):
        rewards = (torch.randn(B * G, generator=g, dtype=torch.float64) * 3 + 1).to(dtype)  # no ties
        got = inline()(rewards, G, std=std)
        assert got.shape == (B * G,) and got.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        assert torch.allclose(got, group_advantages(rewards, G, std=std), atol=tol)


def test_inline_is_naive_on_equal_groups_and_the_package_is_not():
    # The lesson shows this: 0/0 in the inline version, exactly 0 in the package.
    same = torch.ones(4)
    assert torch.isnan(inline()(same, 4)).all()
    assert torch.equal(group_advantages(same, 4), torch.zeros(4))


# ------------------------------------------------------------------ exercises


def test_lesson_stubs_return_none_and_are_checked():
    cells = code_cells(LESSON)
    stubs = [source(c) for c in cells if "# YOUR CODE HERE" in source(c)]
    assert len(stubs) == len(EXERCISES)
    namespace = {"torch": torch}
    for stub in stubs:
        exec(stub, namespace)
    assert namespace["batch_scaled_advantages"](t([6.0, 8.0, 9.0]), 3) is None
    assert namespace["rloo_advantages"](t([6.0, 8.0, 9.0]), 3) is None
    assert namespace["zero_variance_prob"](0.5, 4) is None
    calls = "\n".join(source(c) for c in cells)
    for name in EXERCISES:
        assert f"lesson02.check_{name}({name})" in calls


@pytest.mark.parametrize("name", EXERCISES)
def test_checker_says_not_done_for_a_stub(name, capsys):
    CHECKERS[name](lambda *args: None)
    assert capsys.readouterr().out.strip() == f"{name}: not done yet (the function returns None)"


@pytest.mark.parametrize("name", EXERCISES)
def test_checker_accepts_the_solution(name, capsys):
    CHECKERS[name](solution(name))
    assert capsys.readouterr().out.startswith(f"{name}: correct")


def test_solutions_by_hand():
    # one group: the batch is the group, so the note's formula: (r - 23/3) / sqrt(7/3)
    assert torch.allclose(solution("batch_scaled_advantages")(t([6.0, 8.0, 9.0]), 3),
                          t([-5 / 3, 1 / 3, 4 / 3]) / math.sqrt(7 / 3), atol=1e-12)
    # 6 - (8+9)/2, 8 - (6+9)/2, 9 - (6+8)/2
    assert torch.allclose(solution("rloo_advantages")(t([6.0, 8.0, 9.0]), 3), t([-2.5, 0.5, 2.0]), atol=1e-12)
    # (1/2)^4 + (1/2)^4; 0.8^2 + 0.2^2
    assert math.isclose(solution("zero_variance_prob")(0.5, 4), 0.125, abs_tol=1e-15)
    assert math.isclose(solution("zero_variance_prob")(0.8, 2), 0.68, abs_tol=1e-12)


def batch_group_std(rewards, group_size):                 # GRPO's group std, not the batch's
    return group_advantages(rewards, group_size)


def batch_std_of_centred(rewards, group_size):            # the std of the centred rewards, not of the rewards
    centred = group_advantages(rewards, group_size, scale="none")
    sigma = centred.std()
    return centred / sigma if sigma > 0 else centred


def batch_mean_centred(rewards, group_size):              # REINFORCE's batch mean, then the batch std
    sigma = rewards.std()
    return (rewards - rewards.mean()) / sigma if sigma > 0 else rewards - rewards.mean()


def rloo_centred(rewards, group_size):
    grouped = rewards.view(-1, group_size)
    return (grouped - grouped.mean(dim=1, keepdim=True)).reshape(-1)


def rloo_normalised(rewards, group_size):
    return group_advantages(rewards, group_size)


def rloo_one_big_group(rewards, group_size):
    return rewards - (rewards.sum() - rewards) / (rewards.numel() - 1)


def zero_var_all_right_only(p, G):
    return p**G


def zero_var_one_group_size_off(p, G):
    return p ** (G - 1) + (1 - p) ** (G - 1)


@pytest.mark.parametrize("name, wrong", [
    ("batch_scaled_advantages", batch_group_std),
    ("batch_scaled_advantages", batch_std_of_centred),
    ("batch_scaled_advantages", batch_mean_centred),
    ("rloo_advantages", rloo_centred),
    ("rloo_advantages", rloo_normalised),
    ("rloo_advantages", rloo_one_big_group),
    ("zero_variance_prob", zero_var_all_right_only),
    ("zero_variance_prob", zero_var_one_group_size_off),
])
def test_checker_rejects_wrong_answers(name, wrong):
    with pytest.raises(AssertionError):
        CHECKERS[name](wrong)


# ------------------------------------------------------------------ hygiene


def test_note_numbers_are_pinned_in_the_lesson():
    pinned = [c for c in code_cells(LESSON) if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    text = "".join("".join(o.get("text", "")) for c in pinned for o in c.get("outputs", []))
    for number in ("5.0333", "1.1590", "-1.0641", "+0.1438", "+0.9203",  # 3.8 / 5.2 / 6.1
                   "1.2472", "1.5275", "-1.3363", "-1.0911", "0.2182", "0.8729",  # 6 / 8 / 9
                   "1.2247", "1.0328"):  # sqrt(G/(G-1)) for G = 3 and 16
        assert number in text, number


@pytest.mark.parametrize("path", [LESSON, SOLUTIONS])
def test_notebooks_are_executed_with_the_python3_kernel(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = code_cells(path)
    assert all(c["execution_count"] is not None for c in cells)
    assert source(cells[0]).startswith("# NBVAL_IGNORE_OUTPUT") and "minigrpo" in source(cells[0])
