"""Tests of minigrpo.reward: the section-6 rubric on the note's own group, and sums by hand."""
import math

import pytest

from minigrpo.reward import REWARDS, combine, correctness, format_reward, rubric, score

PROMPT = "求解方程 2x+3=7。"
FIELDS = {"task": "equation", "answer": "2", "a": 2, "b": 3, "c": 7, "split": "test"}
GUESS = "直接猜：x=2，因为2×2+3=7，正确。所以x=2。"
SHORT = "两边减3，得2x=4，再除以2，得x=2。"
COMPLETE = "2x+3=7，移项得2x=7-3，计算得2x=4，两边除以2，得x=2。"
WRONG = "两边减3，得2x=4，再除以2，得x=3。"
ARITH = {"task": "arithmetic", "answer": "46", "a": 12, "b": 34, "op": "+"}


# --- the note's group ------------------------------------------------------------------

def test_rubric_on_the_note_group():
    assert rubric(PROMPT, GUESS, **FIELDS) == 6.0
    assert rubric(PROMPT, SHORT, **FIELDS) == 8.0
    assert rubric(PROMPT, COMPLETE, **FIELDS) == 9.0
    assert rubric(PROMPT, WRONG, **FIELDS) == 0.0


def test_note_group_mean_matches_section_6():
    rewards = [rubric(PROMPT, c, **FIELDS) for c in (GUESS, SHORT, COMPLETE)]
    assert round(sum(rewards) / 3, 2) == 7.67  # the note's mu_r


def test_rubric_other_correct_wordings_and_failures():
    assert rubric(PROMPT, "x=2", **FIELDS) == 6.0              # correct but incomplete
    assert rubric(PROMPT, "  " + COMPLETE + "\n", **FIELDS) == 9.0
    assert rubric(PROMPT, COMPLETE[:-1], **FIELDS) == 6.0      # no final 。: not the canonical text
    assert rubric(PROMPT, "x=2，x=3", **FIELDS) == 0.0          # several candidates
    assert rubric(PROMPT, "两边减3，得2x=4", **FIELDS) == 0.0    # no final answer
    assert rubric(PROMPT, "", **FIELDS) == 0.0


def test_rubric_the_note_result():
    fields = {"task": "equation", "answer": "5", "a": 3, "b": -5, "c": 10}
    result = "3x-5=10，移项得3x=10+5，计算得3x=15，两边除以3，得x=5。"
    assert rubric("求解方程 3x-5=10。", result, **fields) == 9.0
    assert rubric("求解方程 3x-5=10。", "两边加5，得3x=15，再除以3，得x=5。", **fields) == 8.0
    # a, b, c missing: read from the prompt
    assert rubric("求解方程 3x-5=10。", result, answer="5") == 9.0


def test_rubric_is_for_equations():
    with pytest.raises(ValueError, match="equation"):
        rubric("12+34=", "46", **ARITH)


# --- correctness and format -----------------------------------------------------------------

@pytest.mark.parametrize("completion, correct, formatted", [
    (COMPLETE, 1.0, 1.0), (GUESS, 1.0, 1.0), (WRONG, 0.0, 1.0), ("x=2或x=3。", 0.0, 0.0),
    ("得2x=4", 0.0, 0.0), ("x=02", 0.0, 0.0), ("x=-2", 0.0, 1.0),
])
def test_equation_correct_and_format(completion, correct, formatted):
    assert correctness(PROMPT, completion, **FIELDS) == correct
    assert format_reward(PROMPT, completion, **FIELDS) == formatted


@pytest.mark.parametrize("completion, correct, formatted", [
    ("46", 1.0, 1.0), (" 46 ", 1.0, 1.0), ("47", 0.0, 1.0), ("-46", 0.0, 1.0),
    ("046", 0.0, 0.0), ("46 47", 0.0, 0.0), ("+46", 0.0, 0.0), ("", 0.0, 0.0),
])
def test_arithmetic_correct_and_format(completion, correct, formatted):
    assert correctness("12+34=", completion, **ARITH) == correct
    assert format_reward("12+34=", completion, **ARITH) == formatted


def test_task_inferred_from_prompt_and_int_answers():
    assert correctness("50-95=", "-45", answer=-45) == 1.0
    assert correctness(PROMPT, SHORT, answer="2") == 1.0
    assert format_reward(PROMPT, "2") == 0.0


# --- combine --------------------------------------------------------------------------------

def test_combine_hand_computed_sums():
    r = combine({"correct": 1.0, "format": 0.1})
    assert r("12+34=", "46", **ARITH) == pytest.approx(1.1)    # right and well-formed
    assert r("12+34=", "45", **ARITH) == pytest.approx(0.1)    # wrong, well-formed
    assert r("12+34=", "46 47", **ARITH) == 0.0                # two candidates
    assert r.__name__ == "1*correct+0.1*format"


def test_combine_functions_and_names_mixed():
    r = combine({rubric: 0.5, "correct": 2.0, format_reward: -1.0})
    # hand: 0.5*9 + 2*1 - 1*1 = 5.5; 0.5*6 + 2 - 1 = 4.0; wrong: 0 + 0 - 1 = -1.0
    assert r(PROMPT, COMPLETE, **FIELDS) == pytest.approx(5.5)
    assert r(PROMPT, GUESS, **FIELDS) == pytest.approx(4.0)
    assert r(PROMPT, WRONG, **FIELDS) == pytest.approx(-1.0)
    assert r.__name__ == "0.5*rubric+2*correct+-1*format"


def test_combine_rejects_bad_weights():
    with pytest.raises(ValueError) as e:
        combine({"correctness": 1.0})
    assert "'correctness'" in str(e.value) and all(n in str(e.value) for n in REWARDS)
    with pytest.raises(ValueError):
        combine({})
    with pytest.raises(ValueError, match="finite"):
        combine({"correct": math.nan})


# --- score ----------------------------------------------------------------------------------

def test_score_a_group():
    record = {"prompt": PROMPT, **FIELDS}
    completions = [GUESS, SHORT, COMPLETE, WRONG]
    assert score(rubric, [PROMPT] * 4, completions, [record] * 4) == [6.0, 8.0, 9.0, 0.0]


def test_score_names_prompt_and_completion_on_failure():
    def nan_reward(prompt, completion, **_):
        return float("nan")

    with pytest.raises(ValueError) as e:
        score(nan_reward, ["12+34="], ["46"], [ARITH])
    assert "'12+34='" in str(e.value) and "'46'" in str(e.value) and "nan" in str(e.value)
    with pytest.raises(ValueError) as e:   # rubric raises on an arithmetic record
        score(rubric, ["12+34="], ["4x6"], [ARITH])
    assert "'12+34='" in str(e.value) and "'4x6'" in str(e.value)
    with pytest.raises(ValueError, match="inf"):
        score(lambda p, c, **_: math.inf, ["1+1="], ["2"], [ARITH])
    with pytest.raises(ValueError, match="length"):
        score(correctness, ["1+1=", "1+2="], ["2"], [ARITH])


def test_a_multiplication_prompt_implies_its_task():
    """Without a record's task, "计算 a*b。" is read as the multiplication task: its worked answer's last line."""
    from minigrpo.tasks import long_multiplication
    worked = long_multiplication(347, 26)
    assert correctness("计算 347*26。", worked, answer="9022") == 1.0
    assert correctness("计算 347*26。", worked.replace("=9022。", "=9023。"), answer="9022") == 0.0
    assert format_reward("计算 347*26。", worked) == 1.0 and format_reward("计算 347*26。", "9022") == 0.0
    assert correctness("347*26=", "9022", answer="9022") == 1.0          # arithmetic, as before


def test_the_random_reward_is_a_fair_coin_per_rollout_from_the_runs_generator():
    """The negative control of lesson 11: 0 or 1 for every rollout, as often for a right answer as for a wrong one,
    a fresh coin even for the same text, the same coins from the same generator seed."""
    import torch
    from minigrpo.reward import parse_reward
    from minigrpo.tasks import long_multiplication
    random_reward = parse_reward("random")
    prompts = [f"计算 {a}*23。" for a in range(100, 400)]
    right = [long_multiplication(a, 23) for a in range(100, 400)]
    wrong = [w.replace(f"={a * 23}。", f"={a * 23 + 1}。") for a, w in zip(range(100, 400), right)]
    records = [{"task": "multiplication", "answer": str(a * 23)} for a in range(100, 400)]
    coins = lambda texts, seed: score(random_reward, prompts, texts, records, torch.Generator().manual_seed(seed))
    heads_right, heads_wrong, again = coins(right, 0), coins(wrong, 1), coins(right, 2)
    assert set(heads_right + heads_wrong) == {0.0, 1.0}
    assert coins(right, 0) == heads_right                                    # replays from the same seed
    # 300 fair coins each: the share of 1s lies within 0.5 +- 4.5 standard errors (0.5 / sqrt(300))
    se = 0.5 / math.sqrt(300)
    for heads in (heads_right, heads_wrong):
        assert abs(sum(heads) / 300 - 0.5) < 4.5 * se
    # the same texts scored again get fresh coins: they agree about half the time
    assert abs(sum(x == y for x, y in zip(heads_right, again)) / 300 - 0.5) < 4.5 * se
    with pytest.raises(ValueError, match="random draws random numbers: score it with the run's generator"):
        score(random_reward, prompts[:1], right[:1], records[:1])
    mixed = parse_reward("correct:1,random:0.5")      # a sum with a random term is stochastic too
    assert set(score(mixed, prompts, right, records, torch.Generator().manual_seed(0))) == {1.0, 1.5}
