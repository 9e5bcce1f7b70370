"""Lesson 04 (KL and the full objective) and the package agree; its checkers accept the solutions, reject wrong answers.

The inline functions are exec'd from the notebook's cells (found by their
`# inline: NAME` marker) and compared with minigrpo.loss on random inputs and on
numbers derived by hand; the solutions are exec'd from the solutions notebook.
"""
import json
import math
import os

import pytest
import torch

from minigrpo.course.exercises import lesson04
from minigrpo.loss import LOSS_TYPES, aggregate, grpo_loss, kl_estimate

from nbcells import cell_containing, code_cells, exec_cells as load, outputs_text, source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSON = os.path.join(ROOT, "notebooks", "04_kl_and_objective.ipynb")
SOLUTIONS = os.path.join(ROOT, "notebooks", "solutions", "04_kl_and_objective_solutions.ipynb")
INLINE = ("# inline: clipped_surrogate", "# inline: kl_estimators", "# inline: aggregate", "# inline: grpo_loss")


def t(values):
    return torch.tensor(values, dtype=torch.float64)


def random_batch(seed, n=6, t_max=7):
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(n, t_max, generator=g, dtype=torch.float64)  # (N, T)
    old = logp + 0.3 * torch.randn(n, t_max, generator=g, dtype=torch.float64)  # (N, T)
    ref = logp + 0.5 * torch.randn(n, t_max, generator=g, dtype=torch.float64)  # (N, T)
    adv = torch.randn(n, generator=g, dtype=torch.float64)  # (N,)
    lengths = torch.randint(1, t_max + 1, (n,), generator=g)  # (N,)
    mask = (torch.arange(t_max)[None, :] < lengths[:, None]).double()  # (N, T)
    return logp, old, ref, adv, mask


# ------------------------------------------------------------- inline vs package


def test_inline_kl_estimators_by_hand_and_match_package():
    f = load(LESSON, "# inline: kl_estimators")["kl_estimators_inline"]
    # log rho = ref - logp = 0.5, -1.0: k1 = -0.5, 1.0; k2 = 0.125, 0.5; k3 = e^0.5 - 1.5, e^-1
    k1, k2, k3 = f(t([-1.0, -0.5]), t([-0.5, -1.5]))
    assert torch.allclose(k1, t([-0.5, 1.0])) and torch.allclose(k2, t([0.125, 0.5]))
    assert torch.allclose(k3, t([math.exp(0.5) - 1.5, math.exp(-1.0)]))
    logp, _, ref, _, _ = random_batch(0)
    for name, mine in zip(("k1", "k2", "k3"), f(logp, ref)):
        assert torch.allclose(mine, kl_estimate(logp, ref, name), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_inline_aggregate_matches_package(loss_type):
    f = load(LESSON, "# inline: aggregate")["aggregate_inline"]
    x = t([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    m = t([[1, 1, 1], [1, 0, 0]])
    # by hand: grpo (6/3 + 4/1)/2 = 3; bnpo, dapo 10/4; dr_grpo 10/(2*3); seq_sum 10/2
    hand = {"grpo": 3.0, "bnpo": 2.5, "dapo": 2.5, "dr_grpo": 10 / 6, "seq_sum": 5.0}[loss_type]
    assert f(x, m, loss_type).item() == pytest.approx(hand)
    per_token, _, _, _, mask = random_batch(1)
    assert torch.allclose(f(per_token, mask, loss_type), aggregate(per_token, mask, loss_type), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("seed", [2, 3])
def test_inline_grpo_loss_matches_package(loss_type, seed):
    f = load(LESSON, *INLINE)["grpo_loss_inline"]
    logp, old, ref, adv, mask = random_batch(seed)
    for eps_low, eps_high, beta in ((0.2, 0.28, 0.04), (0.1, 0.5, 0.3)):
        mine = f(logp, old, ref, adv, mask, eps_low, eps_high, beta, loss_type)
        theirs, _ = grpo_loss(logp, old, adv, mask, eps_low=eps_low, eps_high=eps_high, beta=beta, ref_logp=ref,
                              kl_estimator="k3", loss_type=loss_type)
        assert torch.allclose(mine, theirs, rtol=0, atol=1e-12)


def test_inline_grpo_loss_first_step_is_zero_with_nonzero_gradient():
    # r = 1 and logp = ref: loss = -mean(A) = 0 for A = (+1, -1), lengths 2 and 3;
    # d loss / d logp_nt = -A_n / (N |o_n|) = -1/4 (row 0), +1/6 (row 1), 0 on padding.
    f = load(LESSON, *INLINE)["grpo_loss_inline"]
    logp = t([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.0]]).requires_grad_(True)
    mask = t([[1, 1, 0], [1, 1, 1]])
    loss = f(logp, logp.detach(), logp.detach(), t([1.0, -1.0]), mask, 0.2, 0.28, 0.04, "grpo")
    assert abs(loss.item()) < 1e-15
    loss.backward()
    assert torch.allclose(logp.grad, t([[-0.25, -0.25, 0.0], [1 / 6, 1 / 6, 1 / 6]]))


# --------------------------------------------------------------- the notebook


def test_lesson_is_executed_without_errors():
    cells = code_cells(LESSON)
    assert all(c.get("execution_count") for c in cells), "commit the notebook executed"
    assert not [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    first = source(cells[0])
    assert first.startswith("# NBVAL_IGNORE_OUTPUT") and "torch.__version__" in first


def test_lesson_pins_the_numbers():
    pinned = [c for c in code_cells(LESSON) if source(c).startswith("# NBVAL_CHECK_OUTPUT")]
    text = "".join(outputs_text(c) for c in pinned)
    assert "exact KL(pi_theta || pi_ref) = 0.1910" in text
    assert "k3: E[k] = 0.1910 (bias +0.0000)" in text and "k2: E[k] = 0.2352 (bias +0.0442)" in text
    # length bias: grpo pushes a token of a 12-token completion 1/4 as hard as one of a 3-token completion
    assert "long / short                    0.25      1.00      1.00      1.00" in text
    assert "grpo     first-step loss +0.0000" in text and "bnpo     first-step loss +0.2474" in text


def test_lesson_has_summary_and_exercises():
    with open(LESSON, encoding="utf-8") as f:
        md = [source(c) for c in json.load(f)["cells"] if c["cell_type"] == "markdown"]
    assert "**Assumes.**" in md[0] and "You will be able to" in md[0]
    assert any(m.startswith("## Summary") for m in md) and any("## Exercises" in m for m in md)
    for name in ("exact_kl", "token_weights", "full_grpo_loss"):
        stub = cell_containing(LESSON, f"def {name}(")
        assert "# YOUR CODE HERE" in stub and "return None" in stub
        assert f"lesson04.check_{name}({name})" in cell_containing(LESSON, f"check_{name}(")


# ------------------------------------------------------------- the checkers

CHECKERS = {"exact_kl": lesson04.check_exact_kl, "token_weights": lesson04.check_token_weights,
            "full_grpo_loss": lesson04.check_full_grpo_loss}


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_says_not_done_for_the_stub(name, capsys):
    stub = load(LESSON, f"def {name}(")[name]
    CHECKERS[name](stub)
    assert capsys.readouterr().out == f"{name}: not done yet (the function returns None)\n"


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_checker_accepts_the_solution(name, capsys):
    solution = load(SOLUTIONS, f"def {name}(")[name]
    assert "# YOUR CODE HERE" not in cell_containing(SOLUTIONS, f"def {name}(")
    CHECKERS[name](solution)
    assert capsys.readouterr().out.startswith(f"{name}: correct")


def _loss(logp, old, ref, adv, mask, eps_low, eps_high, beta, kl_to=None, use_mask=True, per_sequence=True):
    """A "grpo" loss with one thing that can be switched to a mistake."""
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * a)
    log_rho = (ref if kl_to is None else kl_to) - logp
    per_token = -surrogate + beta * (torch.exp(log_rho) - 1 - log_rho)
    m = mask if use_mask else torch.ones_like(mask)
    if per_sequence:
        return ((per_token * m).sum(1) / m.sum(1)).mean()
    return (per_token * m).sum() / m.sum()


def _weights(lengths, loss_type, max_len):
    lengths = torch.tensor(lengths, dtype=torch.float64)
    n = len(lengths)
    per_batch = torch.full_like(lengths, 1 / lengths.sum().item())
    weights = {"grpo": 1 / (n * lengths), "bnpo": per_batch, "dapo": per_batch,
               "dr_grpo": torch.full_like(lengths, 1 / (n * max_len)), "seq_sum": torch.full_like(lengths, 1 / n)}
    return weights[loss_type]


WRONG = {
    "exact_kl": [
        lambda p, q: (q * (q.log() - p.log())).sum().item(),  # KL(q || p): the wrong direction
        lambda p, q: (p.log() - q.log()).mean().item(),  # unweighted mean
        lambda p, q: (p * (p.log() - q.log())).sum().item() + 0.01,  # slightly off
    ],
    "token_weights": [
        lambda lengths, loss_type, max_len: _weights(lengths, "grpo", max_len),  # grpo's weights for every type
        lambda lengths, loss_type, max_len: _weights(lengths, loss_type, max(lengths)),  # dr_grpo: L is max_len
        lambda lengths, loss_type, max_len: _weights(lengths, loss_type, max_len) * len(lengths),  # no 1/N
    ],
    "full_grpo_loss": [
        lambda lp, old, ref, adv, mask, lo, hi, beta: _loss(lp, old, ref, adv, mask, lo, hi, beta, kl_to=old),
        lambda lp, old, ref, adv, mask, lo, hi, beta: _loss(lp, old, ref, adv, mask, lo, hi, beta, use_mask=False),
        lambda lp, old, ref, adv, mask, lo, hi, beta: _loss(lp, old, ref, adv, mask, lo, hi, beta,
                                                            per_sequence=False),  # token mean, not "grpo"
        lambda lp, old, ref, adv, mask, lo, hi, beta: _loss(lp, old, ref, adv, mask, lo, hi, -beta),  # + beta KL
    ],
}


@pytest.mark.parametrize("name, index", [(n, i) for n, fs in sorted(WRONG.items()) for i in range(len(fs))])
def test_checker_rejects_wrong_answers(name, index):
    with pytest.raises(AssertionError, match=name):
        CHECKERS[name](WRONG[name][index])


def test_checkers_name_the_two_classic_mistakes():
    with pytest.raises(AssertionError, match=r"KL\(q \|\| p\)"):
        lesson04.check_exact_kl(WRONG["exact_kl"][0])
    with pytest.raises(AssertionError, match="reference policy"):
        lesson04.check_full_grpo_loss(WRONG["full_grpo_loss"][0])
