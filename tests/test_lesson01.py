"""Lesson 01 (notebooks/01_ppo_limits.ipynb): the notebook's inline code, its exercises and their checkers.

The inline pieces are pulled out of the notebook by their marker comment
("# inline: exact_value") and exec'd, then compared with values derived
independently: the exact value by enumerating every token sequence, the
probability bounds by where the package's clipped objective stops growing.
The worked solutions come from notebooks/solutions/01_ppo_limits_solutions.ipynb
("# solution: name"); the checkers must accept them, reject wrong answers and
say "not done yet" to the lesson's stubs.
"""
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from minigrpo.course.exercises import lesson01
from minigrpo.loss import clipped_surrogate

from nbcells import cell_containing, code_cells, exec_cells, source

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "01_ppo_limits.ipynb"
SOLUTIONS = ROOT / "notebooks" / "solutions" / "01_ppo_limits_solutions.ipynb"
EXERCISES = ("min_updates", "gae_advantages", "tabular_values")
CHECKERS = {
    "min_updates": lesson01.check_min_updates,
    "gae_advantages": lesson01.check_gae_advantages,
    "tabular_values": lesson01.check_tabular_values,
}


def cell_with(path, marker):
    """The source of the one code cell that has `marker` as a line of its own."""
    return cell_containing(path, marker, whole_line=True)


def load(path, marker, name):
    """Exec the marked cell and return the function `name` it defines."""
    return exec_cells(path, marker, whole_line=True)[name]


def solution(name):
    return load(SOLUTIONS, f"# solution: {name}", name)


# ---------------------------------------------------------------- inline code


def enumerated_value(T, t, s, p):
    """P(more than T/2 ones | s ones in the first t) by summing over every completion of the prefix."""
    total = 0.0
    for rest in itertools.product((0, 1), repeat=T - t):
        k = sum(rest)
        if s + k > T / 2:
            total += p**k * (1 - p) ** (T - t - k)
    return total


def test_exact_value_by_hand():
    exact_value = load(LESSON, "# inline: exact_value", "exact_value")
    # T = 8: at least 5 ones of 8: (56 + 28 + 8 + 1) / 256.
    assert math.isclose(exact_value(8, 0, 0), 93 / 256, abs_tol=1e-12)
    # T = 2: both tokens must be 1.
    assert math.isclose(exact_value(2, 0, 0), 0.25, abs_tol=1e-12)
    assert math.isclose(exact_value(2, 1, 1), 0.5, abs_tol=1e-12)
    assert exact_value(2, 1, 0) == 0.0
    # T = 3: two ones already decide it; none after two tokens loses.
    assert exact_value(3, 2, 2) == 1.0 and exact_value(3, 2, 0) == 0.0


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_exact_value_matches_enumeration(p):
    exact_value = load(LESSON, "# inline: exact_value", "exact_value")
    for T in range(1, 10):
        for t in range(T + 1):
            for s in range(t + 1):
                assert math.isclose(exact_value(T, t, s, p), enumerated_value(T, t, s, p), abs_tol=1e-12), (T, t, s, p)


def plateau(p_old, eps, sign, n=100_000):
    """Where the package's clipped objective, as a function of the new probability in (0, 1], is maximal.

    A = +1: the smallest maximiser (the objective grows, then is flat);
    A = -1: the largest maximiser (flat, then falls).
    """
    p_new = torch.linspace(1 / n, 1, n, dtype=torch.float64)  # (n,)
    obj = clipped_surrogate(p_new / p_old, torch.tensor(float(sign), dtype=torch.float64), eps, eps)  # (n,)
    at_max = p_new[obj >= obj.max() - 1e-12]
    return (at_max[0] if sign > 0 else at_max[-1]).item()


def test_reachable_by_hand():
    reachable = load(LESSON, "# inline: reachable_probability", "reachable")
    low, high = reachable(0.01, 0.2)
    assert math.isclose(low, 0.008, abs_tol=1e-15) and math.isclose(high, 0.012, abs_tol=1e-15)
    low, high = reachable(0.9, 0.2)
    assert math.isclose(low, 0.72, abs_tol=1e-15) and high == 1.0  # never the note's 1.08


def test_reachable_matches_package_objective():
    reachable = load(LESSON, "# inline: reachable_probability", "reachable")
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        p_old = 0.02 + 0.96 * torch.rand((), generator=g, dtype=torch.float64).item()
        eps = 0.05 + 0.4 * torch.rand((), generator=g, dtype=torch.float64).item()
        low, high = reachable(p_old, eps)
        assert math.isclose(plateau(p_old, eps, +1), high, abs_tol=2e-5), (p_old, eps)
        assert math.isclose(plateau(p_old, eps, -1), low, abs_tol=2e-5), (p_old, eps)


# ------------------------------------------------------------------ exercises


def test_lesson_stubs_return_none_and_are_checked():
    cells = code_cells(LESSON)
    stubs = [source(c) for c in cells if "# YOUR CODE HERE" in source(c)]
    assert len(stubs) == len(EXERCISES)
    namespace = {"torch": torch}
    for stub in stubs:
        exec(stub, namespace)
    assert namespace["min_updates"](0.01, 0.5, 0.2) is None
    assert namespace["gae_advantages"](torch.tensor([0.5]), 1.0, 1.0, 0.95) is None
    assert namespace["tabular_values"](torch.tensor([[1, 0]]), torch.tensor([0.0])) is None
    calls = "\n".join(source(c) for c in cells)
    for name in EXERCISES:
        assert f"lesson01.check_{name}({name})" in calls


@pytest.mark.parametrize("name", EXERCISES)
def test_checker_says_not_done_for_a_stub(name, capsys):
    CHECKERS[name](lambda *args: None)
    assert capsys.readouterr().out.strip() == f"{name}: not done yet (the function returns None)"


@pytest.mark.parametrize("name", EXERCISES)
def test_checker_accepts_the_solution(name, capsys):
    CHECKERS[name](solution(name))
    assert capsys.readouterr().out.startswith(f"{name}: correct")


def test_solutions_by_hand():
    min_updates = solution("min_updates")
    # 1.2^21 = 46.0 < 50 <= 1.2^22 = 55.2; 1.2^6 = 2.99 < 3 <= 1.2^7 = 3.58
    assert min_updates(0.01, 0.5, 0.2) == 22 and min_updates(0.3, 0.9, 0.2) == 7
    assert min_updates(0.5, 0.4, 0.2) == 0
    gae = solution("gae_advantages")
    values = torch.tensor([0.5, 0.6, 0.4], dtype=torch.float64)
    # lam = 0, gamma = 1: the TD errors [0.6 - 0.5, 0.4 - 0.6, 1 - 0.4]; lam = 1: R - V = [0.5, 0.4, 0.6]
    assert torch.allclose(gae(values, 1.0, 1.0, 0.0), torch.tensor([0.1, -0.2, 0.6], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(gae(values, 1.0, 1.0, 1.0), torch.tensor([0.5, 0.4, 0.6], dtype=torch.float64), atol=1e-12)
    # gamma 0.9, lam 0.5: delta = [0.04, -0.24, 0.6]; A_1 = -0.24 + 0.45 * 0.6 = 0.03, A_0 = 0.04 + 0.45 * 0.03
    assert torch.allclose(gae(values, 1.0, 0.9, 0.5), torch.tensor([0.0535, 0.03, 0.6], dtype=torch.float64),
                          atol=1e-12)
    # episodes [1,1] -> 1 and [0,1] -> 0 (T = 2): V[0,0] = 1/2, V[1,1] = 1, V[1,0] = 0, V[2,2] = 1, V[2,1] = 0
    table = solution("tabular_values")(torch.tensor([[1, 1], [0, 1]]), torch.tensor([1.0, 0.0]))
    nan = float("nan")
    expected = torch.tensor([[0.5, nan, nan], [0.0, 1.0, nan], [nan, 0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(torch.isnan(table), torch.isnan(expected))
    assert torch.allclose(torch.nan_to_num(table.double()), torch.nan_to_num(expected))


def min_updates_floor(p_old, p_target, eps):
    return max(0, math.floor(math.log(p_target / p_old) / math.log(1 + eps)))


def min_updates_ignores_done(p_old, p_target, eps):
    return max(1, math.ceil(math.log(p_target / p_old) / math.log(1 + eps)))


def one_step_errors(values, gamma, last):
    """delta_t = gamma V(s_{t+1}) - V(s_t), the last one last - V(s_{T-1})."""
    next_values = torch.cat([gamma * values[1:], values.new_tensor([last])])
    return next_values - values


def backwards(delta, decay):
    """A_t = delta_t + decay * A_{t+1}, A_T = 0."""
    adv, running = torch.zeros_like(delta), 0.0
    for t in reversed(range(len(delta))):
        running = delta[t] + decay * running
        adv[t] = running
    return adv


def gae_lambda_without_gamma(values, reward, gamma, lam):
    return backwards(one_step_errors(values, gamma, reward), lam)  # decays by lam, not gamma * lam


def gae_summed_forward(values, reward, gamma, lam):
    delta = one_step_errors(values, gamma, reward)
    return backwards(delta.flip(0), gamma * lam).flip(0)  # A_t = delta_t + gamma lam A_{t-1}: credit from the past


def gae_forgets_the_reward(values, reward, gamma, lam):
    return backwards(one_step_errors(values, gamma, 0.0), gamma * lam)  # last delta -V(s_{T-1}), no R


def gae_discounts_the_reward(values, reward, gamma, lam):
    return backwards(one_step_errors(values, gamma, gamma * reward), gamma * lam)  # gamma R - V(s_{T-1})


def gae_monte_carlo(values, reward, gamma, lam):
    return reward - values  # ignores lam


def tabular_zeros_for_unvisited(tokens, rewards):
    return torch.nan_to_num(solution("tabular_values")(tokens, rewards))


def tabular_counts_current_token(tokens, rewards):
    n, T = tokens.shape
    table = torch.full((T + 1, T + 1), float("nan"), dtype=torch.float64)
    ones = tokens.long().cumsum(dim=1)  # (N, T) includes token t: one position late
    for t in range(T):
        for s in range(T + 1):
            hit = ones[:, t] == s
            if hit.any():
                table[t, s] = rewards[hit].double().mean()
    return table


@pytest.mark.parametrize("name, wrong", [
    ("min_updates", min_updates_floor),
    ("min_updates", min_updates_ignores_done),
    ("gae_advantages", gae_lambda_without_gamma),
    ("gae_advantages", gae_summed_forward),
    ("gae_advantages", gae_forgets_the_reward),
    ("gae_advantages", gae_discounts_the_reward),
    ("gae_advantages", gae_monte_carlo),
    ("tabular_values", tabular_zeros_for_unvisited),
    ("tabular_values", tabular_counts_current_token),
])
def test_checker_rejects_wrong_answers(name, wrong):
    with pytest.raises(AssertionError):
        CHECKERS[name](wrong)


# ------------------------------------------------------------------ hygiene


def test_note_numbers_are_pinned_in_the_lesson():
    pinned = [c for c in code_cells(LESSON) if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    text = "".join("".join(o.get("text", "")) for c in pinned for o in c.get("outputs", []))
    assert "0.012" in text and "1.08" in text and "0.9 -> 1.00 (ratio 1.111)" in text
    assert "-1.23" in text and "+0.80" in text  # 3.8 in the note's group and in a harder one
    assert "+0.1367" in text  # first-token advantage for T = 8: 1/2 - 93/256


@pytest.mark.parametrize("path", [LESSON, SOLUTIONS])
def test_notebooks_are_executed_with_the_python3_kernel(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = code_cells(path)
    assert all(c["execution_count"] is not None for c in cells)
    assert source(cells[0]).startswith("# NBVAL_IGNORE_OUTPUT") and "minigrpo" in source(cells[0])
