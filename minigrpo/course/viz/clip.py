"""The clip explorer of lesson 03: what decoupled clipping does to one token, computed then drawn.

Clipping (course section 3, item 2; DAPO "Clip-Higher", Yu et al., 2025, 3.1):
  - `clip_curve`: the objective min(r A, clip(r, 1-eps_low, 1+eps_high) A), its
    derivative with respect to the ratio r, and where that derivative is 0;
  - `zero_gradient_region`: the same region in closed form;
  - `probability_bounds`: how far one update's objective pushes a token of
    probability p: up to min(1, p (1+eps_high)) when A > 0, down to
    p (1-eps_low) when A < 0.
Every number the widget shows comes from these pure functions, built on
`minigrpo.loss.clipped_surrogate`; `draw_clip_axes`, `plot_clip_cases` and
`clip_explorer()` only draw what they return. matplotlib and ipywidgets are
imported inside functions only, so the engine runs without them.
"""
from __future__ import annotations

import math
from functools import partial

import torch

from minigrpo.checks import check
from minigrpo.loss import clipped_surrogate

from .widgets import show_figure, update_shown

TABLE_PROBS = (0.01, 0.1, 0.5, 0.9)  # old probabilities listed in the clip explorer's table
CLIP_COLORS = {"objective": "tab:blue", "grad": "tab:orange", "clip": "tab:red", "cap": "0.6"}


def _fmt(x: float) -> str:
    """A number as the lessons print it: 4 significant digits, no float noise (0.012, 1.152)."""
    return f"{x:.4g}"


def _check_eps(eps_low: float, eps_high: float) -> None:
    check("eps_low", eps_low)
    check("eps_high", eps_high)


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
    ax_obj.set_ylabel("surrogate per token")
    ax_grad.set_ylabel("d surrogate / d r")
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
        update_shown(self.out, self._update)

    def _update(self) -> None:
        self.state = clip_state(self.eps_low.value, self.eps_high.value, self.adv_sign.value,
                                self.p_old.value, self.r_max)
        rows = "".join(
            f"<tr><td>{_fmt(b['p_old'])}</td><td>{_fmt(b['up'])}{' (capped by 1)' if b['capped'] else ''}</td>"
            f"<td>{_fmt(b['down'])}</td></tr>" for b in self.state["table"])
        self.bounds.value = (f"<pre>{self.state['text']}</pre><table><tr><th>p_old</th><th>A &gt; 0: up to</th>"
                             f"<th>A &lt; 0: down to</th></tr>{rows}</table>")
        self.draw()

    def draw(self) -> None:
        show_figure(self.out, partial(draw_clip_axes, state=self.state, r_max=self.r_max), figsize=(10, 3.4))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def clip_explorer(**kwargs) -> ClipExplorer:
    """The clip explorer of lesson 03 (keyword arguments: ClipExplorer's initial values)."""
    return ClipExplorer(**kwargs)
