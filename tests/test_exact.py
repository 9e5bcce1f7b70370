"""minigrpo.course.exact (lesson 10): the enumeration is complete and exact, and the estimators' known
properties hold. Every expected value here is derived by hand in the test's docstring, not read off the code.
"""
import math

import pytest
import torch

from minigrpo.course import exact
from minigrpo.loss import aggregate

ENUM = exact.enumerate_toy()
THETA = exact.init_logits(ENUM, seed=0)
DRAWS = 4000


@pytest.fixture(scope="module")
def scores():
    return exact.token_scores(THETA, ENUM).sum(2)                             # (P, S, n)


@pytest.fixture(scope="module")
def grad_J():
    return exact.exact_gradient(exact.objective, THETA, ENUM)


def test_every_completion_is_listed_once():
    """K = 3 answer tokens, T = 4: 3^0 + 3^1 + 3^2 + 3^3 completions ending in EOS, 3^4 cut off: 121."""
    assert ENUM.tokens.shape == (121, 4)
    rows = {tuple(t[:int(n)].tolist()) for t, n in zip(ENUM.tokens, ENUM.length)}
    assert len(rows) == 121
    assert sorted(ENUM.length.tolist()).count(4.0) == 27 + 81


def test_the_reward_by_hand():
    """Prompt p's answer is '... p EOS'; EOS alone and a cut-off completion earn 0."""
    eos = ENUM.toy.eos
    where = {tuple(t[:int(n)].tolist()): s for s, (t, n) in enumerate(zip(ENUM.tokens, ENUM.length))}
    assert ENUM.reward[1, where[(1, eos)]] == 1 and ENUM.reward[0, where[(1, eos)]] == 0
    assert ENUM.reward[2, where[(0, 1, 2, eos)]] == 1 and ENUM.reward[2, where[(2, 2, 2, 2)]] == 0
    assert ENUM.reward[:, where[(eos,)]].sum() == 0
    # right answers per prompt: 'p EOS', 'x p EOS', 'x y p EOS' -> 1 + 3 + 9
    assert ENUM.reward.sum(1).tolist() == [13.0, 13.0, 13.0]


def test_probabilities_sum_to_one_and_match_a_hand_product():
    probs = exact.sequence_probs(THETA, ENUM)
    assert torch.allclose(probs.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-12)
    # pi(2, EOS | prompt 1) = softmax(theta[1, root])[2] * softmax(theta[1, prefix (2,)])[EOS]
    root, after_2 = 0, 1 + 2                                                  # prefixes: (), (0,), (1,), (2,), ...
    by_hand = torch.softmax(THETA[1, root], 0)[2] * torch.softmax(THETA[1, after_2], 0)[3]
    s = next(i for i, (t, n) in enumerate(zip(ENUM.tokens, ENUM.length)) if n == 2 and t[0] == 2)
    assert probs[1, s].item() == pytest.approx(by_hand.item(), rel=1e-12)


def test_the_exact_gradient_matches_finite_differences(grad_J):
    direction = torch.randn(THETA.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-5
    fd = (exact.objective(THETA + h * direction, ENUM) - exact.objective(THETA - h * direction, ENUM)) / (2 * h)
    assert (grad_J @ direction.reshape(-1)).item() == pytest.approx(fd.item(), rel=1e-7)


def test_the_kls_are_zero_at_the_reference_and_positive_elsewhere():
    other = exact.init_logits(ENUM, seed=3)
    assert exact.reverse_kl(THETA, THETA, ENUM).item() == pytest.approx(0.0, abs=1e-12)
    assert exact.reverse_kl(other, THETA, ENUM) > 0 and exact.forward_kl(other, THETA, ENUM) > 0
    assert exact.reverse_kl(other, THETA, ENUM) != pytest.approx(exact.forward_kl(other, THETA, ENUM).item())


def test_sequence_weights_are_the_engines_aggregations():
    """For one draw, the weight per token is d aggregate / d x of the engine's loss.aggregate."""
    lengths = torch.tensor([[[1.0, 4.0], [2.0, 3.0], [4.0, 2.0]]], dtype=torch.float64)   # (1, P=3, G=2)
    mask = (torch.arange(4)[None, :] < lengths.reshape(-1, 1)).double()                  # (6, 4)
    for loss_type in exact.AGGREGATIONS:
        x = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
        aggregate(x, mask, loss_type, max_completion_length=4).backward()
        want = x.grad[:, 0]
        got = exact.sequence_weights(lengths, loss_type, 4).reshape(-1)
        assert torch.allclose(got, want), loss_type


def _mean_is(draws, target, sigmas=4.0):
    """The draws' mean (n,) is `target` within `sigmas` Monte Carlo standard errors (of the error's norm)."""
    err = (draws.mean(0) - target).norm()
    se = (draws.var(0, correction=1).sum() / draws.shape[0]).sqrt()
    return err.item() <= sigmas * se.item(), err.item(), se.item()


def test_plain_reinforce_is_unbiased(scores, grad_J):
    """E[R grad log pi] = sum_o pi(o) R(o) grad log pi(o) = grad sum_o pi(o) R(o) = grad J."""
    draws = exact.reward_gradient_draws(THETA, ENUM, "reward", "seq_sum", 4, DRAWS, seed=0, scores=scores)
    ok, err, se = _mean_is(draws, grad_J)
    assert ok, (err, se)


@pytest.mark.parametrize("G", [2, 4, 8])
def test_the_group_mean_shrinks_the_gradient_by_g_minus_1_over_g(scores, grad_J, G):
    """A_i = R_i - 1/G sum_j R_j. E[R_j grad log pi(o_i)] = E[R_j] E[grad log pi(o_i)] = 0 for j != i, and
    E[R_i grad log pi(o_i)] / G is grad J / G, so E[g] = (1 - 1/G) grad J."""
    draws = exact.reward_gradient_draws(THETA, ENUM, "group_mean", "seq_sum", G, DRAWS, seed=G, scores=scores)
    ok, err, se = _mean_is(draws, (G - 1) / G * grad_J)
    assert ok, (err, se)
    if G <= 4:   # a shrink of 1/2 or 1/4 is far outside the noise of 4000 draws (at G = 8 it may not be)
        assert not _mean_is(draws, grad_J)[0]


def test_the_batch_mean_shrinks_it_by_n_minus_1_over_n(scores, grad_J):
    """The batch of P G completions: each sits in its own baseline with weight 1/(PG): E = (1 - 1/(PG)) grad J."""
    G, P = 2, 3
    draws = exact.reward_gradient_draws(THETA, ENUM, "batch_mean", "seq_sum", G, DRAWS, seed=5, scores=scores)
    assert _mean_is(draws, (1 - 1 / (P * G)) * grad_J)[0]


@pytest.mark.parametrize("G", [2, 4])
def test_rloo_is_unbiased(scores, grad_J, G):
    """The mean of the other G-1 rewards is independent of o_i, so its term has expectation 0."""
    draws = exact.reward_gradient_draws(THETA, ENUM, "rloo", "seq_sum", G, DRAWS, seed=10 + G, scores=scores)
    assert _mean_is(draws, grad_J)[0]


def test_the_per_sequence_mean_follows_a_length_weighted_objective(scores, grad_J):
    """With RLOO's baseline and GRPO's 1/|o|: E[g] = 1/P sum_p E[(R - J_p)/|o| grad log pi], not grad J."""
    draws = exact.reward_gradient_draws(THETA, ENUM, "rloo", "grpo", 4, DRAWS, seed=7, scores=scores)
    followed = exact.length_weighted_gradient(THETA, ENUM)
    assert _mean_is(draws, followed)[0]
    assert exact.cosine(followed, grad_J) < 0.99


def test_bias_and_error_by_hand():
    truth = torch.tensor([3.0, 4.0], dtype=torch.float64)                    # |truth| = 5
    draws = torch.tensor([[3.0, 4.0], [3.0, 6.0]], dtype=torch.float64)      # mean (3, 5)
    r = exact.bias_and_error(draws, truth)
    assert r["bias"] == pytest.approx(1 / 5)
    assert r["scale"] == pytest.approx((9 + 20) / 25)
    assert r["cosine"] == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 4) / 2) / 5)


# ------------------------------------------------------------------ the KL term in the loss

REF = exact.init_logits(ENUM, seed=0)
POLICY = REF + exact.init_logits(ENUM, scale=0.5, seed=1)
OLD = POLICY + exact.init_logits(ENUM, scale=0.3, seed=2)


def test_k1_in_the_loss_has_zero_expected_gradient_on_policy():
    """grad sum_t (log pi_t - log ref_t) = grad log pi(o), and E_pi[grad log pi] = grad sum_o pi(o) = 0."""
    mean, _ = exact.kl_gradient_moments(POLICY, REF, ENUM, "k1")
    assert mean.abs().max().item() < 1e-12


def test_one_token_k2_follows_the_reverse_kl_and_k3_the_forward_kl():
    """With one token: grad k2 = (log pi - log ref) grad log pi, whose expectation is grad KL(pi||ref)
    (the other term, E[grad log pi], is 0); grad k3 = grad(ref/pi - log(ref/pi)) = (1 - ref/pi) grad log pi,
    whose expectation is -sum_o ref(o) grad log pi(o) = grad KL(ref||pi)."""
    enum = exact.enumerate_toy(exact.Toy(max_tokens=1))
    ref = exact.init_logits(enum, seed=0)
    pol = ref + exact.init_logits(enum, scale=0.7, seed=1)
    rev = exact.exact_gradient(exact.reverse_kl, pol, ref, enum)
    fwd = exact.exact_gradient(exact.forward_kl, pol, ref, enum)
    k2, _ = exact.kl_gradient_moments(pol, ref, enum, "k2")
    k3, _ = exact.kl_gradient_moments(pol, ref, enum, "k3")
    assert torch.allclose(k2, rev, atol=1e-12) and torch.allclose(k3, fwd, atol=1e-12)
    assert not torch.allclose(rev, fwd, atol=1e-3)


def test_one_token_off_policy_weighting_restores_the_on_policy_expectation():
    """E_old[pi/old * g(o)] = sum_o pi(o) g(o): the per-token ratio is the whole ratio when there is one token."""
    enum = exact.enumerate_toy(exact.Toy(max_tokens=1))
    ref = exact.init_logits(enum, seed=0)
    pol = ref + exact.init_logits(enum, scale=0.7, seed=1)
    old = pol + exact.init_logits(enum, scale=0.5, seed=2)
    on, _ = exact.kl_gradient_moments(pol, ref, enum, "k3")
    weighted, _ = exact.kl_gradient_moments(pol, ref, enum, "k3", "off_policy_weighted", old)
    unweighted, _ = exact.kl_gradient_moments(pol, ref, enum, "k3", "off_policy", old)
    assert torch.allclose(weighted, on, atol=1e-12) and not torch.allclose(unweighted, on, atol=1e-3)


def test_the_kl_moments_agree_with_sampling():
    """The enumerated mean and variance of k3's per-completion gradient against 20,000 samples."""
    mean, var = exact.kl_gradient_moments(POLICY, REF, ENUM, "k3")
    per = exact.kl_gradient_per_completion(POLICY, REF, ENUM, "k3")          # (P, S, n)
    idx = exact.sample(POLICY, ENUM, 20000, 1, seed=3)[:, :, 0]               # (D, P)
    g = per[torch.arange(3)[None, :], idx]                                    # (D, P, n)
    assert _mean_is(g.mean(1), mean)[0]
    sampled_var = (g - g.mean(0)).pow(2).sum(-1).mean()
    assert sampled_var.item() == pytest.approx(var.item(), rel=0.05)


def test_kl_rmse_by_hand():
    truth = torch.tensor([0.0, 2.0], dtype=torch.float64)
    mean = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # |bias|^2 = 1, variance 12 over P G = 3 * 4 samples -> mse 2, rmse sqrt(2) / 2
    assert exact.kl_rmse(mean, torch.tensor(12.0, dtype=torch.float64), truth, 3, 4) == pytest.approx(math.sqrt(2) / 2)


def test_off_policy_needs_the_old_policy():
    with pytest.raises(ValueError, match="old policy"):
        exact.kl_gradient_moments(POLICY, REF, ENUM, "k1", "off_policy")


def test_k1_as_a_reward_is_the_reverse_kls_gradient():
    """E_pi[log(pi/ref)(o) grad log pi(o)] = sum_o grad pi(o) log(pi/ref)(o) = grad KL(pi||ref) - E[grad log pi],
    and E[grad log pi] = 0; off-policy, the completion's whole ratio pi/old restores the same expectation."""
    rev = exact.exact_gradient(exact.reverse_kl, POLICY, REF, ENUM)
    on, _ = exact.kl_gradient_moments(POLICY, REF, ENUM, "k1_reward")
    off, _ = exact.kl_gradient_moments(POLICY, REF, ENUM, "k1_reward", "off_policy_weighted", OLD)
    assert torch.allclose(on, rev, atol=1e-12) and torch.allclose(off, rev, atol=1e-12)


def test_train_to_reaches_its_pass_rates_and_leaves_the_rest():
    history = exact.train_to(THETA, ENUM, targets=(None, 0.5, 0.9))
    J_p = (exact.sequence_probs(history[-1], ENUM) * ENUM.reward).sum(1)
    assert J_p[1] >= 0.5 and J_p[2] >= 0.9 and torch.equal(history[-1][0], THETA[0])
    before = (exact.sequence_probs(history[-2], ENUM) * ENUM.reward).sum(1)
    assert before[2] < 0.9 or before[1] < 0.5                                   # it stopped at the first step there
