"""The KL explorer and loss aggregation of lesson 04, computed then drawn.

KL (DeepSeekMath eq. 4; Schulman, "Approximating KL Divergence", 2020):
  - `kl_pair`: two distributions over a small vocabulary, `distance` apart;
  - `kl_moments`: exact KL and the exact mean, bias and std of k1/k2/k3;
  - `kl_estimator_stats`: the same estimated from n samples.
Aggregation (TRL's loss_type): `token_weights`, the weight one token of each
completion gets in the loss.
Every number the widget shows comes from these pure functions, built on
`minigrpo.loss.kl_estimate` and `aggregate`; `draw_kl_axes` and `kl_explorer()`
only draw what they return. matplotlib and ipywidgets are imported inside
functions only, so the engine runs without them.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from minigrpo.loss import KL_ESTIMATORS, aggregate, kl_estimate

from .widgets import show_figure, update_shown

KL_COLORS = {"k1": "tab:blue", "k2": "tab:orange", "k3": "tab:green"}


# ------------------------------------------------------------------------ KL


def kl_pair(distance: float, vocab_size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Two distributions over a small vocabulary: pi_theta moved `distance` away from pi_ref.

    pi_ref = softmax(z), z = linspace(2, -1, V) (token 0 most likely);
    pi_theta = softmax(z + distance * linspace(-1, 1, V)) shifts mass towards
    the tokens pi_ref finds unlikely. distance = 0 gives two equal distributions.

    Returns:
        (p_theta, p_ref), each (V,) float64, positive, summing to 1.
    """
    z = torch.linspace(2.0, -1.0, vocab_size, dtype=torch.float64)  # (V,)
    direction = torch.linspace(-1.0, 1.0, vocab_size, dtype=torch.float64)  # (V,)
    return torch.softmax(z + distance * direction, dim=0), torch.softmax(z, dim=0)  # (V,), (V,)


def kl_moments(p_theta: torch.Tensor, p_ref: torch.Tensor) -> dict:
    """Exact KL(pi_theta || pi_ref) and the exact mean, bias and std of k1, k2, k3.

    Exact: sums over the vocabulary weighted by pi_theta, the distribution the
    tokens are sampled from, with the per-token estimates of
    `minigrpo.loss.kl_estimate`.

    Args:
        p_theta, p_ref: (V,) positive probability vectors.

    Returns:
        {"kl": float, "k1": {"mean", "bias", "std", "min"}, "k2": ..., "k3": ...}:
        mean = E[k], bias = E[k] - KL, std = sqrt(Var[k]) of ONE sample's
        estimate, min = smallest value over the vocabulary.
    """
    logp, ref = p_theta.log(), p_ref.log()  # (V,), (V,)
    kl = float((p_theta * (logp - ref)).sum())
    out = {"kl": kl}
    for est in KL_ESTIMATORS:
        k = kl_estimate(logp, ref, est)  # (V,) value of the estimate if token v is sampled
        mean = float((p_theta * k).sum())
        var = float((p_theta * (k - mean) ** 2).sum())
        out[est] = {"mean": mean, "bias": mean - kl, "std": math.sqrt(max(var, 0.0)), "min": float(k.min())}
    return out


def kl_samples(p_theta: torch.Tensor, p_ref: torch.Tensor, n_samples: int, seed: int = 0) -> dict:
    """Draw n tokens from pi_theta and return each estimator's per-token value.

    Returns:
        {"tokens": (n,) int64, "k1": (n,), "k2": (n,), "k3": (n,)} float64.
    """
    g = torch.Generator().manual_seed(seed)
    tokens = torch.multinomial(p_theta, n_samples, replacement=True, generator=g)  # (n,)
    logp, ref = p_theta.log()[tokens], p_ref.log()[tokens]  # (n,), (n,)
    return {"tokens": tokens, **{est: kl_estimate(logp, ref, est) for est in KL_ESTIMATORS}}


def kl_estimator_stats(p_theta: torch.Tensor, p_ref: torch.Tensor, n_samples: int, seed: int = 0) -> dict:
    """Exact moments (`kl_moments`) beside their estimates from n samples (`kl_samples`).

    Returns:
        {"kl", "n_samples", "samples" (the `kl_samples` dict), and per estimator
        "k1"/"k2"/"k3": the `kl_moments` entries plus "sample_mean" (the n-sample
        estimate of KL), "sample_std" (spread of one sample's value), "se"
        (sample_std / sqrt(n), the n-sample estimate's standard error) and
        "frac_negative" (share of samples below 0)}.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples!r}")
    out = kl_moments(p_theta, p_ref)
    samples = kl_samples(p_theta, p_ref, n_samples, seed)
    for est in KL_ESTIMATORS:
        v = samples[est]  # (n,)
        out[est].update(sample_mean=float(v.mean()), sample_std=float(v.std()),
                        se=float(v.std()) / math.sqrt(n_samples), frac_negative=float((v < 0).double().mean()))
    out.update(n_samples=n_samples, samples=samples)
    return out


def kl_table_text(stats: dict) -> str:
    """A fixed-width table of `kl_estimator_stats`, as the KL explorer prints it."""
    lines = [f"exact KL(pi_theta || pi_ref) = {stats['kl']:.4f}, n = {stats['n_samples']} samples",
             f"{'':4}{'E[k]':>9}{'bias':>9}{'std':>9}{'mean of n':>12}{'+- se':>9}{'< 0':>7}"]
    for est in KL_ESTIMATORS:
        s = stats[est]
        lines.append(f"{est:4}{s['mean']:9.4f}{round(s['bias'], 4) + 0.0:9.4f}{s['std']:9.4f}"
                     f"{s['sample_mean']:12.4f}{s['se']:9.4f}{s['frac_negative']:7.0%}")
    return "\n".join(lines)


# --------------------------------------------------------------- aggregation


def token_weights(lengths, loss_type: str, max_completion_length: int | None = None) -> torch.Tensor:
    """Weight of one token of each completion in the aggregated loss: d loss / d x_nt.

    The per-token terms x_nt enter `minigrpo.loss.aggregate` linearly, so this
    derivative (by autograd) is the same for every token of a completion.
    By hand, with N completions, |o_n| tokens each and L = max_completion_length
    (default: the longest length): grpo 1/(N |o_n|); bnpo, dapo 1/sum_n |o_n|;
    dr_grpo 1/(N L); seq_sum 1/N.

    Args:
        lengths: (N,) completion lengths |o_n| >= 1.
        loss_type: one of minigrpo.loss.LOSS_TYPES.

    Returns:
        (N,) float64 weights.
    """
    lengths = [int(n) for n in lengths]
    n_pos = max(lengths)
    mask = (torch.arange(n_pos)[None, :] < torch.tensor(lengths)[:, None]).double()  # (N, T)
    x = torch.zeros(len(lengths), n_pos, dtype=torch.float64, requires_grad=True)  # (N, T)
    (grad,) = torch.autograd.grad(aggregate(x, mask, loss_type, max_completion_length), x)  # (N, T)
    return grad[:, 0]  # (N,) every token of a completion has the same weight


# ------------------------------------------------------------------- drawing


def draw_kl_axes(ax_dist, ax_samples, p_theta, p_ref, stats: dict) -> None:
    """The two distributions (bars) and every sample's k1/k2/k3 value (dots) against the exact KL."""
    v = torch.arange(len(p_theta))
    ax_dist.bar(v - 0.2, p_theta, width=0.4, label=r"$\pi_\theta$ (sampled)")
    ax_dist.bar(v + 0.2, p_ref, width=0.4, label=r"$\pi_{ref}$")
    ax_dist.set_xlabel("token")
    ax_dist.set_title("the two distributions")
    ax_dist.legend(fontsize=8)
    g = torch.Generator().manual_seed(1)
    for i, est in enumerate(KL_ESTIMATORS):
        vals = stats["samples"][est]  # (n,)
        jitter = (torch.rand(len(vals), generator=g, dtype=torch.float64) - 0.5) * 0.4  # (n,)
        ax_samples.scatter(i + jitter, vals, s=6, alpha=0.35, color=KL_COLORS[est])
        ax_samples.plot([i - 0.3, i + 0.3], [stats[est]["sample_mean"]] * 2, color="k", lw=2)
        ax_samples.plot(i, stats[est]["mean"], marker="D", color="k", ms=5, ls="none")
    ax_samples.axhline(stats["kl"], color="tab:red", ls="--", lw=1.5, label=f"exact KL = {stats['kl']:.3f}")
    ax_samples.axhline(0.0, color="0.5", lw=0.8)
    ax_samples.set_xticks(range(len(KL_ESTIMATORS)), KL_ESTIMATORS)
    ax_samples.set_title(f"one estimate per sample (n = {stats['n_samples']}); bar: their mean, diamond: E[k]")
    ax_samples.title.set_fontsize(9)
    ax_samples.legend(fontsize=8)


# -------------------------------------------------------------------- widget


class KLExplorer:
    """Sliders for the distance between pi_theta and pi_ref and the number of samples.

    Controls: `.distance`, `.n_samples`, `.seed`. Every change recomputes
    `.state` with `kl_pair` and `kl_estimator_stats`, prints the table into
    `.table` (an HTML widget) and redraws the figure in `.out`.
    """

    def __init__(self, distance: float = 1.0, n_samples: int = 64, seed: int = 0, vocab_size: int = 6):
        import ipywidgets as w

        style = {"description_width": "80px"}
        self.vocab_size = vocab_size
        self.distance = w.FloatSlider(value=distance, min=0.0, max=3.0, step=0.05, description="distance",
                                      style=style)
        self.n_samples = w.IntSlider(value=n_samples, min=2, max=1024, step=1, description="n samples", style=style)
        self.seed = w.IntSlider(value=seed, min=0, max=20, description="seed", style=style)
        self.table = w.HTML()
        self.out = w.Output()
        self.state: dict = {}
        for control in (self.distance, self.n_samples, self.seed):
            control.observe(lambda change: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.distance, self.n_samples, self.seed]), self.table, self.out])
        self.update()

    def update(self) -> None:
        """Recompute the state from the controls, then print the table and draw."""
        update_shown(self.out, self._update)

    def _update(self) -> None:
        p_theta, p_ref = kl_pair(self.distance.value, self.vocab_size)
        stats = kl_estimator_stats(p_theta, p_ref, self.n_samples.value, self.seed.value)
        self.state = {"distance": self.distance.value, "p_theta": p_theta, "p_ref": p_ref, **stats}
        self.table.value = f"<pre>{kl_table_text(stats)}</pre>"
        self.draw()

    def draw(self) -> None:
        draw = partial(draw_kl_axes, p_theta=self.state["p_theta"], p_ref=self.state["p_ref"], stats=self.state)
        show_figure(self.out, draw, figsize=(10, 3.4), width_ratios=(1, 1.4))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)



def kl_explorer(**kwargs) -> KLExplorer:
    """The KL explorer of lesson 04 (keyword arguments: KLExplorer's initial values)."""
    return KLExplorer(**kwargs)
