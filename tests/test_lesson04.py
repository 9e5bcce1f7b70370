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
    for name in ("kl_push", "sequence_kl", "offpolicy_k3"):
        stub = cell_containing(LESSON, f"def {name}(")
        assert "# YOUR CODE HERE" in stub and "return None" in stub
        assert f"lesson04.check_{name}({name})" in cell_containing(LESSON, f"check_{name}(")


# ------------------------------------------------------------- the checkers

CHECKERS = {"kl_push": lesson04.check_kl_push, "sequence_kl": lesson04.check_sequence_kl,
            "offpolicy_k3": lesson04.check_offpolicy_k3}


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


def _push(logp, ref, mask, beta, estimator, loss_type, dk=None, weight=None, use_mask=True):
    """kl_push with one thing that can be switched to a mistake; by hand from the formulas, no autograd."""
    log_rho = ref - logp
    right = {"k1": torch.ones_like(log_rho), "k2": -log_rho, "k3": 1 - torch.exp(log_rho)}[estimator]
    n, t_max = mask.shape
    lengths = mask.sum(1, keepdim=True)
    w = {"grpo": 1 / (n * lengths), "bnpo": 1 / lengths.sum(), "dr_grpo": 1 / (n * t_max), "seq_sum": 1 / n}
    d = right if dk is None else dk(log_rho, estimator)
    out = beta * (w[loss_type] if weight is None else weight(lengths, n, t_max)) * d
    return out * mask if use_mask else out


def _k3_value(log_rho, estimator):
    return torch.exp(log_rho) - 1 - log_rho


def _seq(p1, p2, q1, q2, how):
    log_p, log_q = p1.log()[:, None] + p2.log(), q1.log()[:, None] + q2.log()
    P, Q = log_p.exp(), log_q.exp()
    if how == "reverse":
        return (Q * (log_q - log_p)).sum().item()
    if how == "uniform_rows":  # chain rule with the second token's KL averaged uniformly over prefixes
        first = (p1 * (p1.log() - q1.log())).sum()
        rows = (p2 * (p2.log() - q2.log())).sum(1)
        return (first + rows.mean()).item()
    if how == "marginals":  # KL of each position's marginal, added: ignores the dependence on the prefix
        m_p, m_q = P.sum(0), Q.sum(0)
        return ((p1 * (p1.log() - q1.log())).sum() + (m_p * (m_p.log() - m_q.log())).sum()).item()
    if how == "per_token":  # the per-token mean the engine logs: half the sequence KL
        return 0.5 * (P * (log_p - log_q)).sum().item()
    raise ValueError(how)


WRONG = {
    "kl_push": [
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, dk=lambda r, e: torch.exp(r) - 1),  # sign
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, dk=_k3_value),  # k3's value, not slope
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, dk=lambda r, e: 1 - torch.exp(r)),  # always k3
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, weight=lambda L, n, T: 1 / n),  # seq_sum weight
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, weight=lambda L, n, T: 1 / (n * L)),  # grpo
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, beta, est, lt, use_mask=False),  # padding pushed
        lambda lp, ref, m, beta, est, lt: _push(lp, ref, m, 1.0, est, lt),  # beta forgotten
    ],
    "sequence_kl": [
        lambda p1, p2, q1, q2: _seq(p1, p2, q1, q2, "reverse"),
        lambda p1, p2, q1, q2: _seq(p1, p2, q1, q2, "uniform_rows"),
        lambda p1, p2, q1, q2: _seq(p1, p2, q1, q2, "marginals"),
        lambda p1, p2, q1, q2: _seq(p1, p2, q1, q2, "per_token"),
        lambda p1, p2, q1, q2: (p1 * (p1.log() - q1.log())).sum().item(),  # first token only
    ],
    "offpolicy_k3": [
        lambda lp, old, ref: kl_estimate(lp, ref, "k3"),  # plain k3: biased under pi_old
        lambda lp, old, ref: torch.exp(lp - old) * kl_estimate(lp, ref, "k1"),  # weighted k1: can be negative
        lambda lp, old, ref: torch.exp(old - lp) * kl_estimate(lp, ref, "k3"),  # the weight upside down
        lambda lp, old, ref: kl_estimate(old, ref, "k3"),  # KL of pi_old, not pi_theta
        lambda lp, old, ref: torch.exp(lp - old) * kl_estimate(lp, ref, "k2"),  # weighted k2: biased
    ],
}


@pytest.mark.parametrize("name, index", [(n, i) for n, fs in sorted(WRONG.items()) for i in range(len(fs))])
def test_checker_rejects_wrong_answers(name, index):
    with pytest.raises(AssertionError, match=name):
        CHECKERS[name](WRONG[name][index])


def test_checkers_name_the_classic_mistakes():
    with pytest.raises(AssertionError, match="sign is flipped"):
        lesson04.check_kl_push(WRONG["kl_push"][0])
    with pytest.raises(AssertionError, match="padding tokens must get 0"):
        lesson04.check_kl_push(WRONG["kl_push"][5])
    with pytest.raises(AssertionError, match=r"KL\(q \|\| p\)"):
        lesson04.check_sequence_kl(WRONG["sequence_kl"][0])
    with pytest.raises(AssertionError, match="plain k3"):
        lesson04.check_offpolicy_k3(WRONG["offpolicy_k3"][0])
    with pytest.raises(AssertionError, match="negative"):
        lesson04.check_offpolicy_k3(WRONG["offpolicy_k3"][1])
