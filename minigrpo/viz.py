"""What the lessons' figures and widgets show: pure, tested computations first, drawing after.

Lesson 03 (decoupled clipping) and lesson 04 (KL estimators, loss aggregation).
Following STYLE.md 6, every number a widget shows comes from a pure function
here, built on the engine's own `minigrpo.loss.clipped_surrogate`,
`kl_estimate` and `aggregate`; the widgets' callbacks only draw what those
return, so the numbers are tested without a browser (tests/test_viz.py).

Clipping (course section 3, item 2; DAPO "Clip-Higher", Yu et al., 2025, 3.1):
  - `clip_curve`: the objective min(r A, clip(r, 1-eps_low, 1+eps_high) A), its
    derivative with respect to the ratio r, and where that derivative is 0;
  - `zero_gradient_region`: the same region in closed form;
  - `probability_bounds`: how far one update's objective pushes a token of
    probability p: up to min(1, p (1+eps_high)) when A > 0, down to
    p (1-eps_low) when A < 0.
KL (DeepSeekMath eq. 4; Schulman, "Approximating KL Divergence", 2020):
  - `kl_pair`: two distributions over a small vocabulary, `distance` apart;
  - `kl_moments`: exact KL and the exact mean, bias and std of k1/k2/k3;
  - `kl_estimator_stats`: the same estimated from n samples.
Aggregation (TRL's loss_type): `token_weights`, the weight one token of each
completion gets in the loss.

Widgets: `clip_explorer()` and `kl_explorer()`. matplotlib and ipywidgets are
imported inside functions only, so the engine runs without them.
"""
from __future__ import annotations

import math

import torch

from minigrpo.loss import KL_ESTIMATORS, aggregate, clipped_surrogate, kl_estimate

TABLE_PROBS = (0.01, 0.1, 0.5, 0.9)  # old probabilities listed in the clip explorer's table
CLIP_COLORS = {"objective": "tab:blue", "grad": "tab:orange", "clip": "tab:red", "cap": "0.6"}
KL_COLORS = {"k1": "tab:blue", "k2": "tab:orange", "k3": "tab:green"}


def _fmt(x: float) -> str:
    """A number as the lessons print it: 4 significant digits, no float noise (0.012, 1.152)."""
    return f"{x:.4g}"


def _check_eps(eps_low: float, eps_high: float) -> None:
    if not 0.0 <= eps_low < 1.0:
        raise ValueError(f"eps_low must be in [0, 1), got {eps_low!r}")
    if not eps_high >= 0.0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high!r}")


# ------------------------------------------------------------------ clipping


def clip_curve(ratios, adv: float, eps_low: float, eps_high: float) -> dict:
    """The clipped objective along a grid of ratios, with its derivative d objective / d r.

    Args:
        ratios: (R,) ratios r = pi_theta / pi_old (a list, array or tensor).
        adv: the advantage A of the token (a number; its sign is what matters).
        eps_low, eps_high: the ratio is clipped to [1-eps_low, 1+eps_high].

    Returns:
        dict of float64 tensors, each (R,): "ratio"; "objective",
        min(r A, clip(r) A) from `minigrpo.loss.clipped_surrogate`; "grad", its
        derivative in r by autograd (A where the min picks r A, 0 where it
        picks the clipped, constant term); "zero_grad", bool, grad == 0.
    """
    _check_eps(eps_low, eps_high)
    r = torch.as_tensor(ratios, dtype=torch.float64).detach().clone().requires_grad_(True)  # (R,)
    objective = clipped_surrogate(r, float(adv), eps_low, eps_high)  # (R,)
    (grad,) = torch.autograd.grad(objective.sum(), r)  # (R,) d objective_i / d r_i
    return {"ratio": r.detach(), "objective": objective.detach(), "grad": grad, "zero_grad": grad == 0}


def zero_gradient_region(adv_sign: int, eps_low: float, eps_high: float) -> tuple[float, float]:
    """Open interval of ratios where the clipped objective's gradient is 0.

    A > 0: (1+eps_high, inf), the token has risen enough; A < 0: (0, 1-eps_low),
    it has fallen enough; A = 0: (0, inf), nothing to learn. The other side is
    never clipped: a move against the advantage can always be undone.
    """
    _check_eps(eps_low, eps_high)
    if adv_sign > 0:
        return (1.0 + eps_high, math.inf)
    if adv_sign < 0:
        return (0.0, 1.0 - eps_low)
    return (0.0, math.inf)


def probability_bounds(p_old: float, eps_low: float, eps_high: float) -> dict:
    """How far one update's clipped objective pushes a token of old probability p_old.

    Returns dict of floats:
        "p_old";
        "up_clip":  p_old (1+eps_high), where the objective stops pushing when A > 0;
        "up":       min(1, up_clip), as high as the probability can get when A > 0;
        "capped":   True when up_clip > 1, i.e. probability 1 is reached first and
                    the upper clip never acts (any p_old > 1/(1+eps_high));
        "down":     p_old (1-eps_low), where the objective stops pushing when A < 0;
        "ratio_at_one": 1/p_old, the ratio at which the probability would be 1.
    The lower bound 1-eps_low never limits a rise, the upper one never a fall.
    The clip only removes this token's own gradient; other tokens' gradients
    through shared weights can still move it past these values.
    """
    _check_eps(eps_low, eps_high)
    if not 0.0 < p_old <= 1.0:
        raise ValueError(f"p_old must be a probability in (0, 1], got {p_old!r}")
    up_clip = p_old * (1.0 + eps_high)
    return {"p_old": p_old, "up_clip": up_clip, "up": min(1.0, up_clip), "capped": up_clip > 1.0,
            "down": p_old * (1.0 - eps_low), "ratio_at_one": 1.0 / p_old}


def bounds_text(p_old: float, eps_low: float, eps_high: float) -> str:
    """Three lines stating `probability_bounds` for one token, as the clip explorer prints them."""
    b = probability_bounds(p_old, eps_low, eps_high)
    up = f"min(1, {_fmt(p_old)} x {_fmt(1 + eps_high)}) = {_fmt(b['up'])}"
    if b["capped"]:
        up += " (probability 1 comes first: the upper clip never acts)"
    return (f"p_old = {_fmt(p_old)}, eps_low = {_fmt(eps_low)}, eps_high = {_fmt(eps_high)}\n"
            f"A > 0: pushed up to at most {up}\n"
            f"A < 0: pushed down to at least {_fmt(p_old)} x {_fmt(1 - eps_low)} = {_fmt(b['down'])}")


def clip_state(eps_low: float, eps_high: float, adv_sign: int, p_old: float,
               r_max: float = 2.0, n_points: int = 401) -> dict:
    """Everything the clip explorer shows for one setting of its controls.

    Returns dict: the four inputs; "curve" (`clip_curve` on R = n_points ratios
    in [0, r_max] with A = adv_sign); "zero_grad_region" (`zero_gradient_region`);
    "bounds" (`probability_bounds` of p_old); "table" (`probability_bounds` of
    each of TABLE_PROBS); "text" (`bounds_text`).
    """
    ratios = torch.linspace(0.0, r_max, n_points, dtype=torch.float64)  # (R,)
    return {
        "eps_low": eps_low, "eps_high": eps_high, "adv_sign": adv_sign, "p_old": p_old,
        "curve": clip_curve(ratios, float(adv_sign), eps_low, eps_high),
        "zero_grad_region": zero_gradient_region(adv_sign, eps_low, eps_high),
        "bounds": probability_bounds(p_old, eps_low, eps_high),
        "table": [probability_bounds(p, eps_low, eps_high) for p in TABLE_PROBS],
        "text": bounds_text(p_old, eps_low, eps_high),
    }


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


def draw_clip_axes(ax_obj, ax_grad, state: dict, r_max: float = 2.0, show_cap: bool = True) -> None:
    """Draw one advantage sign of a `clip_state`: objective on ax_obj, gradient on ax_grad.

    Shades the zero-gradient region (red) and, if show_cap, the ratios no
    probability can reach, r > 1/p_old (grey hatch); dotted lines at
    1-eps_low and 1+eps_high.
    """
    curve, sign, p_old = state["curve"], state["adv_sign"], state["p_old"]
    lo, hi = state["zero_grad_region"]
    r_one = state["bounds"]["ratio_at_one"]
    name = "A > 0" if sign > 0 else "A < 0" if sign < 0 else "A = 0"
    panels = ((ax_obj, "objective", r"$\min(rA,\ \mathrm{clip}(r)A)$"), (ax_grad, "grad", r"$\partial/\partial r$"))
    for ax, key, label in panels:
        ax.axvspan(max(lo, 0.0), min(hi, r_max), color=CLIP_COLORS["clip"], alpha=0.12, lw=0,
                   label="gradient 0 (clipped)")
        if show_cap and r_one < r_max:
            ax.axvspan(r_one, r_max, facecolor="none", edgecolor=CLIP_COLORS["cap"], hatch="//", lw=0,
                       label=rf"$\pi_\theta > 1$: impossible ($\pi_{{old}}$ = {_fmt(p_old)})")
        for x in (1 - state["eps_low"], 1 + state["eps_high"]):
            ax.axvline(x, color="0.4", ls=":", lw=1)
        ax.plot(curve["ratio"], curve[key], color=CLIP_COLORS["objective" if key == "objective" else "grad"],
                lw=2, label=label)
        ax.set_xlim(0, r_max)
        ax.set_xlabel(r"ratio $r = \pi_\theta / \pi_{old}$")
        ax.grid(alpha=0.3)
    ax_obj.set_title(f"{name}: objective (|A| = 1)")
    ax_grad.set_title(f"{name}: gradient in r")
    ax_grad.set_ylim(-1.4, 1.4)
    ax_obj.legend(loc="upper left" if sign >= 0 else "lower left", fontsize=7)


def plot_clip_cases(eps_low: float = 0.2, eps_high: float = 0.28, p_old: float | None = None,
                    r_max: float = 2.0):
    """Static 2x2 figure: objective (top) and gradient (bottom) for A = +1 (left) and A = -1 (right).

    With p_old, also hatches the ratios that would take that token's probability above 1.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for col, sign in enumerate((1, -1)):
        state = clip_state(eps_low, eps_high, sign, 1.0 if p_old is None else p_old, r_max)
        draw_clip_axes(axes[0, col], axes[1, col], state, r_max, show_cap=p_old is not None)
        axes[0, col].set_xlabel("")
    fig.suptitle(rf"Decoupled clipping, $\varepsilon_{{low}}$ = {_fmt(eps_low)}, "
                 rf"$\varepsilon_{{high}}$ = {_fmt(eps_high)}")
    fig.tight_layout()
    return fig


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


# ------------------------------------------------------------------- widgets


class ClipExplorer:
    """Sliders for eps_low, eps_high and the token's old probability, a toggle for the sign of A.

    Controls: `.eps_low`, `.eps_high`, `.p_old` (sliders), `.adv_sign` (toggle,
    +1 or -1). Every change recomputes `.state` with `clip_state`, writes the
    bounds into `.bounds` (an HTML widget) and redraws the figure in `.out`.
    Display it by leaving it last in a cell (or `display(explorer.widget)`).
    """

    def __init__(self, eps_low: float = 0.2, eps_high: float = 0.28, adv_sign: int = 1,
                 p_old: float = 0.01, r_max: float = 2.0):
        import ipywidgets as w

        style = {"description_width": "70px"}
        self.r_max = r_max
        self.eps_low = w.FloatSlider(value=eps_low, min=0.0, max=0.6, step=0.01, description="eps_low", style=style)
        self.eps_high = w.FloatSlider(value=eps_high, min=0.0, max=1.0, step=0.01, description="eps_high",
                                      style=style)
        self.adv_sign = w.ToggleButtons(options=[("A > 0", 1), ("A < 0", -1)], value=adv_sign,
                                        description="advantage", style=style)
        self.p_old = w.FloatLogSlider(value=p_old, base=10, min=-3, max=0, step=0.01, description="p_old",
                                      readout_format=".3g", style=style)
        self.bounds = w.HTML()
        self.out = w.Output()
        self.state: dict = {}
        for control in (self.eps_low, self.eps_high, self.adv_sign, self.p_old):
            control.observe(lambda change: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.eps_low, self.eps_high]), w.HBox([self.adv_sign, self.p_old]),
                              self.bounds, self.out])
        self.update()

    def update(self) -> None:
        """Recompute the state from the controls, then print the bounds and draw."""
        self.state = clip_state(self.eps_low.value, self.eps_high.value, self.adv_sign.value,
                                self.p_old.value, self.r_max)
        rows = "".join(
            f"<tr><td>{_fmt(b['p_old'])}</td><td>{_fmt(b['up'])}{' (capped by 1)' if b['capped'] else ''}</td>"
            f"<td>{_fmt(b['down'])}</td></tr>" for b in self.state["table"])
        self.bounds.value = (f"<pre>{self.state['text']}</pre><table><tr><th>p_old</th><th>A &gt; 0: up to</th>"
                             f"<th>A &lt; 0: down to</th></tr>{rows}</table>")
        self.draw()

    def draw(self) -> None:
        import matplotlib.pyplot as plt

        with self.out:
            self.out.clear_output(wait=True)
            fig, (ax_obj, ax_grad) = plt.subplots(1, 2, figsize=(10, 3.4))
            draw_clip_axes(ax_obj, ax_grad, self.state, self.r_max)
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


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
        p_theta, p_ref = kl_pair(self.distance.value, self.vocab_size)
        stats = kl_estimator_stats(p_theta, p_ref, self.n_samples.value, self.seed.value)
        self.state = {"distance": self.distance.value, "p_theta": p_theta, "p_ref": p_ref, **stats}
        self.table.value = f"<pre>{kl_table_text(stats)}</pre>"
        self.draw()

    def draw(self) -> None:
        import matplotlib.pyplot as plt

        with self.out:
            self.out.clear_output(wait=True)
            fig, (ax_dist, ax_samples) = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=(1, 1.4))
            draw_kl_axes(ax_dist, ax_samples, self.state["p_theta"], self.state["p_ref"], self.state)
            fig.tight_layout()
            plt.show()
            plt.close(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def clip_explorer(**kwargs) -> ClipExplorer:
    """The clip explorer of lesson 03 (keyword arguments: ClipExplorer's initial values)."""
    return ClipExplorer(**kwargs)


def kl_explorer(**kwargs) -> KLExplorer:
    """The KL explorer of lesson 04 (keyword arguments: KLExplorer's initial values)."""
    return KLExplorer(**kwargs)
