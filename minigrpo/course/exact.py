"""Exact policy gradients (lesson 10): a task small enough to list every completion, so that the expected
reward J(theta), its gradient, both KLs and their gradients are sums, not estimates; and every estimator
the course uses, measured against them.

The task: P prompts; a completion is at most T tokens from K answer tokens and EOS (the EOS is a token of
the completion, as in the engine); prompt p's reward is 1 when the completion ends with EOS right after
the token p ("... p EOS"), else 0, so right answers are 2 to T tokens long and the reward does not care
which. The policy is tabular: one row of V = K + 1 logits per (prompt, prefix), pi(o_t | p, o_<t) =
softmax(theta[p, prefix])[o_t]. With K = 3 and T = 4 that is 121 completions per prompt and 480 numbers.

    J(theta)         = 1/P sum_p sum_o pi(o|p) R(p, o)                      the objective
    KL_rev(theta)    = 1/P sum_p sum_o pi(o|p) log(pi(o|p) / ref(o|p))       what GRPO's beta term estimates
    KL_fwd(theta)    = 1/P sum_p sum_o ref(o|p) log(ref(o|p) / pi(o|p))

An estimator is what a training step's loss gives as its gradient (the ascent direction of -loss) from P
groups of G sampled completions. Its draws are sums of per-completion coefficients times the completions'
score vectors grad log pi(o|p), which are computed once for all 121 completions (torch.func.jacrev), so a
thousand draws cost one matrix product. Williams (1992) for REINFORCE, Kool et al. (2019) for RLOO, Shao et
al. (2024, §4.1) for GRPO, Liu et al. (2025, §3.1) for Dr. GRPO, Yu et al. (2025, §3.3) for DAPO's token
mean, Schulman (2020, "Approximating KL divergence") for k1, k2, k3.

Symbol | Shape        | Description
S      | ()           | number of completions of one prompt (121 for K = 3, T = 4)
tokens | (S, T)       | every completion, EOS-padded past its end
mask   | (S, T)       | 1 on the completion's tokens (EOS included)
prefix | (S, T)       | index of the prefix o_<t that position t is sampled from
U      | (P, S, T, n) | grad_theta log pi(o_t | p, o_<t) for every token of every completion (0 past the end)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from ..advantage import baseline_advantages, group_advantages
from ..loss import kl_estimate

DTYPE = torch.float64


@dataclass(frozen=True)
class Toy:
    """The enumerable task: P prompts, K answer tokens plus EOS, completions of at most T tokens."""
    prompts: int = 3
    answer_tokens: int = 3
    max_tokens: int = 4

    @property
    def eos(self) -> int:
        return self.answer_tokens

    @property
    def vocab(self) -> int:
        return self.answer_tokens + 1


@dataclass
class Enumeration:
    """Every completion of the toy task, with what the estimators need of it."""
    toy: Toy
    tokens: torch.Tensor        # (S, T) long
    mask: torch.Tensor          # (S, T) float
    prefix: torch.Tensor        # (S, T) long, index into the prefixes
    length: torch.Tensor        # (S,) tokens, EOS included
    reward: torch.Tensor        # (P, S) float
    n_prefixes: int


def enumerate_toy(toy: Toy = Toy()) -> Enumeration:
    """List every completion: those that end with EOS at position 1..T, and those cut off after T tokens."""
    K, T, eos = toy.answer_tokens, toy.max_tokens, toy.eos
    prefixes = [p for n in range(T) for p in itertools.product(range(K), repeat=n)]  # no EOS inside a prefix
    index = {p: i for i, p in enumerate(prefixes)}
    completions = [body + (eos,) for n in range(T) for body in itertools.product(range(K), repeat=n)]
    completions += list(itertools.product(range(K), repeat=T))                      # truncated: no EOS
    S = len(completions)
    tokens = torch.full((S, T), eos, dtype=torch.long)
    mask = torch.zeros(S, T, dtype=DTYPE)
    prefix = torch.zeros(S, T, dtype=torch.long)
    reward = torch.zeros(toy.prompts, S, dtype=DTYPE)
    for s, c in enumerate(completions):
        tokens[s, :len(c)] = torch.tensor(c)
        mask[s, :len(c)] = 1.0
        prefix[s, :len(c)] = torch.tensor([index[c[:t]] for t in range(len(c))])
        for p in range(toy.prompts):
            reward[p, s] = float(len(c) >= 2 and c[-1] == eos and c[-2] == p)
    return Enumeration(toy, tokens, mask, prefix, mask.sum(1), reward, len(prefixes))


def init_logits(enum: Enumeration, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Random logits theta (P, prefixes, V), N(0, scale^2), seeded."""
    g = torch.Generator().manual_seed(seed)
    shape = (enum.toy.prompts, enum.n_prefixes, enum.toy.vocab)
    return scale * torch.randn(shape, generator=g, dtype=DTYPE)


def token_logprobs(theta: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """log pi(o_t | p, o_<t) of every token of every completion (P, S, T); 0 past the end."""
    logp_all = torch.log_softmax(theta, dim=-1)                               # (P, H, V)
    rows = logp_all[:, enum.prefix]                                           # (P, S, T, V)
    picked = rows.gather(-1, enum.tokens.expand(theta.shape[0], -1, -1).unsqueeze(-1)).squeeze(-1)  # (P, S, T)
    return picked * enum.mask


def sequence_probs(theta: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """pi(o | p) of every completion (P, S); each row sums to 1."""
    return token_logprobs(theta, enum).sum(-1).exp()


def objective(theta: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """J(theta): the expected reward, averaged over the prompts. ()"""
    return (sequence_probs(theta, enum) * enum.reward).sum(-1).mean()


def reverse_kl(theta: torch.Tensor, ref: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """KL(pi_theta || pi_ref) of whole completions, averaged over the prompts. ()"""
    lp, lr = token_logprobs(theta, enum).sum(-1), token_logprobs(ref, enum).sum(-1)   # (P, S)
    return (lp.exp() * (lp - lr)).sum(-1).mean()


def forward_kl(theta: torch.Tensor, ref: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """KL(pi_ref || pi_theta) of whole completions, averaged over the prompts. ()"""
    lp, lr = token_logprobs(theta, enum).sum(-1), token_logprobs(ref, enum).sum(-1)   # (P, S)
    return (lr.exp() * (lr - lp)).sum(-1).mean()


def train_to(theta: torch.Tensor, enum: Enumeration, targets: tuple, lr: float = 2.0,
             max_steps: int = 500) -> list[torch.Tensor]:
    """Exact gradient ascent on each prompt's J_p until it reaches its target pass rate (None: untouched);
    returns every step's logits, so that an earlier one can serve as pi_old. Deterministic."""
    history = [theta.detach().clone()]
    x = theta.detach().clone()
    for _ in range(max_steps):
        y = x.clone().requires_grad_()
        J_p = (sequence_probs(y, enum) * enum.reward).sum(-1)                 # (P,) each prompt's own J_p
        active = torch.tensor([t is not None and J_p[p].item() < t for p, t in enumerate(targets)])
        if not active.any():
            break
        (g,) = torch.autograd.grad(J_p.sum(), y)                              # prompt p's logits move its J_p only
        x = x + lr * g * active[:, None, None]
        history.append(x.clone())
    return history


def exact_gradient(fn, theta: torch.Tensor, *args) -> torch.Tensor:
    """d fn(theta, *args) / d theta, flattened (n,), by autograd through the enumeration."""
    x = theta.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(fn(x, *args), x)
    return g.reshape(-1)


def token_scores(theta: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """U: grad_theta log pi(o_t | p, o_<t) for every token (P, S, T, n), one Jacobian of token_logprobs."""
    jac = torch.func.jacrev(lambda flat: token_logprobs(flat.reshape(theta.shape), enum))(theta.reshape(-1))
    return jac                                                                # (P, S, T, n)


def length_weighted_gradient(theta: torch.Tensor, enum: Enumeration) -> torch.Tensor:
    """The gradient that GRPO's per-sequence mean follows with an unbiased baseline (n,):

        1/P sum_p sum_o pi(o|p) (R(p,o) - J_p) / |o| * grad log pi(o|p)
      = grad of 1/P sum_p E[(R - J_p) / |o|] with J_p held fixed: a 1/|o|-weighted objective, not J.
    """
    U = token_scores(theta, enum)                                             # (P, S, T, n)
    probs = sequence_probs(theta, enum)                                       # (P, S)
    J_p = (probs * enum.reward).sum(-1, keepdim=True)                         # (P, 1)
    weight = probs * (enum.reward - J_p) / enum.length                        # (P, S)
    return torch.einsum("ps,psn->n", weight, U.sum(2)) / enum.toy.prompts


# ---------------------------------------------------------------- the estimators of the reward's gradient

ADVANTAGES = ("reward", "batch_mean", "group_mean", "rloo", "sample_std", "population_std")
AGGREGATIONS = ("seq_sum", "grpo", "dapo", "dr_grpo")


def advantages(rewards: torch.Tensor, kind: str) -> torch.Tensor:
    """(D, P, G) rewards -> (D, P, G) advantages, the engine's functions applied to every draw at once."""
    D, P, G = rewards.shape
    flat = rewards.reshape(-1)                                                # (D*P*G,) groups of G in a row
    if kind == "reward":                                                      # REINFORCE without a baseline
        return rewards.clone()
    if kind == "batch_mean":                                                  # a draw's batch is one "group"
        return group_advantages(flat, P * G, scale="none").reshape(D, P, G)
    if kind == "group_mean":
        return group_advantages(flat, G, scale="none").reshape(D, P, G)
    if kind == "rloo":
        return baseline_advantages(flat, G, "rloo").reshape(D, P, G)
    std = {"sample_std": "sample", "population_std": "population"}[kind]
    return group_advantages(flat, G, scale="group", std=std).reshape(D, P, G)


def sequence_weights(lengths: torch.Tensor, loss_type: str, max_tokens: int) -> torch.Tensor:
    """(D, P, G) completion lengths -> the weight (D, P, G) that loss.aggregate gives each token of a
    completion (every token of one completion gets the same), for the N = P * G completions of a draw."""
    D, P, G = lengths.shape
    N = P * G
    if loss_type == "seq_sum":
        return torch.full_like(lengths, 1.0 / N)
    if loss_type == "grpo":
        return 1.0 / (N * lengths)
    if loss_type == "dapo":
        return (1.0 / lengths.sum((1, 2), keepdim=True)).expand_as(lengths).clone()
    if loss_type == "dr_grpo":
        return torch.full_like(lengths, 1.0 / (N * max_tokens))
    raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(AGGREGATIONS)}")


def sample(theta: torch.Tensor, enum: Enumeration, draws: int, group_size: int, seed: int) -> torch.Tensor:
    """Indices (D, P, G) of completions sampled from pi_theta: `draws` batches of P groups of G."""
    g = torch.Generator().manual_seed(seed)
    probs = sequence_probs(theta, enum).detach()                              # (P, S)
    idx = torch.multinomial(probs, draws * group_size, replacement=True, generator=g)  # (P, D*G)
    return idx.reshape(enum.toy.prompts, draws, group_size).permute(1, 0, 2).contiguous()


def draws_of(coef: torch.Tensor, idx: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Each draw's gradient estimate (D, n): sum over its completions of coef times grad log pi(o|p).
    coef, idx (D, P, G); scores (P, S, n), the completions' score vectors."""
    D, P, G = idx.shape
    per_seq = torch.zeros(D, P, scores.shape[1], dtype=coef.dtype)           # (D, P, S)
    per_seq.scatter_add_(2, idx, coef)
    return torch.einsum("dps,psn->dn", per_seq, scores)


def reward_gradient_draws(theta: torch.Tensor, enum: Enumeration, adv: str, loss_type: str, group_size: int,
                          draws: int, seed: int = 0, scores: torch.Tensor | None = None) -> torch.Tensor:
    """`draws` on-policy estimates (D, n) of the reward's gradient, as a step's loss gives it (mu = 1, so
    the ratio is 1 and the clipped term's gradient is A * grad log pi)."""
    scores = token_scores(theta, enum).sum(2) if scores is None else scores  # (P, S, n)
    idx = sample(theta, enum, draws, group_size, seed)                        # (D, P, G)
    P = enum.toy.prompts
    rewards = enum.reward[torch.arange(P)[None, :, None], idx]                # (D, P, G)
    lengths = enum.length[idx]                                                # (D, P, G)
    coef = advantages(rewards, adv) * sequence_weights(lengths, loss_type, enum.toy.max_tokens)
    return draws_of(coef, idx, scores)


def bias_and_error(estimates: torch.Tensor, truth: torch.Tensor) -> dict:
    """What the draws (D, n) say of the estimator against the exact gradient truth (n,), relative to |truth|:

    bias      |E[g] - truth| / |truth|, with its Monte Carlo standard error (se_bias)
    cosine    between E[g] and truth (1: the right direction; a learning rate absorbs a scale)
    scale     E[g] . truth / |truth|^2 (1 for an unbiased estimator, (G-1)/G for the group mean)
    rmse      sqrt(E |g - truth|^2) / |truth|: bias and noise together, what one step gets
    rmse_rescaled  the same for g / scale: the error left once a learning rate has absorbed the scale
    """
    D = estimates.shape[0]
    norm = truth.norm()
    mean = estimates.mean(0)                                                  # (n,)
    se = (estimates.var(0, correction=1).sum() / D).sqrt()                   # standard error of |mean|
    scale = mean @ truth / norm**2
    return {"bias": ((mean - truth).norm() / norm).item(), "se_bias": (se / norm).item(),
            "cosine": torch.nn.functional.cosine_similarity(mean, truth, dim=0).item(), "scale": scale.item(),
            "rmse": ((estimates - truth).pow(2).sum(1).mean().sqrt() / norm).item(),
            "rmse_rescaled": ((estimates / scale - truth).pow(2).sum(1).mean().sqrt() / norm).item()}


# ---------------------------------------------------------------- the KL term put in the loss

KL_ESTIMATORS = ("k1", "k2", "k3", "k1_reward")
KL_WEIGHTS = ("on_policy", "off_policy", "off_policy_weighted")


def kl_gradient_per_completion(theta: torch.Tensor, ref: torch.Tensor, enum: Enumeration, estimator: str,
                               behaviour: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient (P, S, n) that the loss term sum_t k(o_t) (the engine's kl_estimate, summed over the
    completion's tokens) gives for each completion, the completion held fixed as in a training step.

    With `behaviour` (the logits the completion was sampled from) each token's term is weighted by its
    ratio pi_theta(o_t)/pi_behaviour(o_t), detached: TRL's and the engine's use_bias_correction_kl.
    "k1_reward" is not a loss term of the engine: the completion's log(pi/ref), detached, times its
    log pi, the score-function (REINFORCE) form of the KL as a penalty on the reward; off-policy it is
    weighted by the completion's whole ratio.
    """
    x = theta.detach().clone().reshape(-1)
    ref_lp = token_logprobs(ref, enum).detach()                               # (P, S, T)
    weight = torch.ones_like(ref_lp)
    if behaviour is not None:
        weight = (token_logprobs(theta, enum) - token_logprobs(behaviour, enum)).detach().exp()

    def per_completion(flat):
        lp = token_logprobs(flat.reshape(theta.shape), enum)                  # (P, S, T)
        if estimator == "k1_reward":   # log(pi/ref) of the whole completion as a (negative) reward, detached
            penalty = ((lp - ref_lp) * enum.mask).sum(-1).detach()            # (P, S)
            return penalty * (weight.prod(-1) if behaviour is not None else 1.0) * (lp * enum.mask).sum(-1)
        return (weight * kl_estimate(lp, ref_lp, estimator) * enum.mask).sum(-1)   # (P, S)

    return torch.func.jacrev(per_completion)(x)                              # (P, S, n)


def kl_gradient_moments(theta: torch.Tensor, ref: torch.Tensor, enum: Enumeration, estimator: str,
                        weighting: str = "on_policy", old: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean (n,) and variance () (E|g - E g|^2, averaged over prompts) of one completion's KL-term
    gradient, by enumeration.

    on_policy            completions from pi_theta
    off_policy           completions from pi_old, the term as it is (TRL's default)
    off_policy_weighted  completions from pi_old, each token's term weighted by pi_theta/pi_old
    The mean of G completions (and P prompts) then has variance total / (P G): the RMSE follows exactly.
    """
    if weighting != "on_policy" and old is None:
        raise ValueError(f"weighting={weighting!r} needs the old policy's logits (old=...)")
    sampler = theta if weighting == "on_policy" else old
    per = kl_gradient_per_completion(theta, ref, enum, estimator,
                                     behaviour=old if weighting == "off_policy_weighted" else None)  # (P, S, n)
    probs = sequence_probs(sampler, enum).detach()                            # (P, S)
    mean_p = torch.einsum("ps,psn->pn", probs, per)                           # (P, n)
    second_p = torch.einsum("ps,psn->p", probs, per.pow(2))                   # (P,)
    variance = (second_p - mean_p.pow(2).sum(-1)).mean()                     # E|g - E g|^2, mean over prompts
    return mean_p.mean(0), variance


def kl_rmse(mean: torch.Tensor, variance: torch.Tensor, truth: torch.Tensor, prompts: int, group_size: int) -> float:
    """sqrt(|bias|^2 + variance / (P G)) / |truth|: the exact relative RMSE of the P x G-sample estimate."""
    mse = (mean - truth).pow(2).sum() + variance / (prompts * group_size)
    return (mse.sqrt() / truth.norm()).item()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos of the angle between two gradients; nan when one is 0 (up to round-off: below 1e-10 of the other)."""
    na, nb = a.norm(), b.norm()
    if na <= 1e-10 * nb or nb <= 1e-10 * na:
        return float("nan")
    return (a @ b / (na * nb)).item()
