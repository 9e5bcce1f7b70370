"""Tests for minigrpo.viz: the pure functions against numbers derived by hand, the widgets headlessly.

Clipping: objective min(r A, clip(r, 1-eps_low, 1+eps_high) A), gradient A or 0,
probability bounds min(1, p (1+eps_high)) (A > 0) and p (1-eps_low) (A < 0).
KL: exact KL and the exact moments of k1/k2/k3 on a two-token example worked out
in the comments. Widgets: set `.value` on a control, read `.state` and the text.
"""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from minigrpo.course import viz  # noqa: E402


def close(actual, expected, atol=1e-9):
    actual = torch.as_tensor(actual, dtype=torch.float64)
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.shape == expected.shape and torch.allclose(actual, expected, rtol=0, atol=atol), (actual, expected)


# ------------------------------------------------------------------ clipping


def test_clip_curve_positive_advantage_by_hand():
    # A = +1, band [0.8, 1.28]: objective = r below 1.28 (gradient 1), flat 1.28 above (gradient 0).
    # r = 0.5 is below the band but NOT clipped: min(0.5, 0.8) = 0.5.
    c = viz.clip_curve([0.5, 1.0, 1.2, 1.5, 2.0], 1.0, 0.2, 0.28)
    close(c["objective"], [0.5, 1.0, 1.2, 1.28, 1.28])
    close(c["grad"], [1.0, 1.0, 1.0, 0.0, 0.0])
    assert c["zero_grad"].tolist() == [False, False, False, True, True]


def test_clip_curve_negative_advantage_by_hand():
    # A = -2, band [0.8, 1.28]:
    #   r = 0.5: min(-1.0, -1.6) = -1.6 (clipped, gradient 0)
    #   r = 1.0: -2; r = 1.2: -2.4 (inside the band, gradient -2)
    #   r = 1.5: min(-3.0, -2.56) = -3.0; r = 2.0: min(-4, -2.56) = -4 (above the band, not clipped)
    c = viz.clip_curve([0.5, 1.0, 1.2, 1.5, 2.0], -2.0, 0.2, 0.28)
    close(c["objective"], [-1.6, -2.0, -2.4, -3.0, -4.0])
    close(c["grad"], [0.0, -2.0, -2.0, -2.0, -2.0])
    assert c["zero_grad"].tolist() == [True, False, False, False, False]


def test_zero_gradient_region_by_hand_and_agrees_with_curve():
    assert viz.zero_gradient_region(1, 0.2, 0.28) == (1.28, math.inf)
    assert viz.zero_gradient_region(-1, 0.2, 0.28) == (0.0, 0.8)
    assert viz.zero_gradient_region(-1, 0.1, 0.28) == (0.0, 0.9)
    assert viz.zero_gradient_region(0, 0.2, 0.28) == (0.0, math.inf)
    r = torch.linspace(0.005, 2.995, 300, dtype=torch.float64)  # (300,) no grid point on a kink
    for sign, (eps_low, eps_high) in [(1, (0.2, 0.28)), (-1, (0.2, 0.28)), (1, (0.1, 0.5)), (-1, (0.35, 0.1))]:
        lo, hi = viz.zero_gradient_region(sign, eps_low, eps_high)
        mask = viz.clip_curve(r, float(sign), eps_low, eps_high)["zero_grad"]
        assert mask.tolist() == ((r > lo) & (r < hi)).tolist()


def test_probability_bounds_by_hand():
    b = viz.probability_bounds(0.01, 0.2, 0.2)  # note 1.3: 0.01 x 1.2 = 0.012; down 0.01 x 0.8
    assert b["up"] == pytest.approx(0.012) and b["down"] == pytest.approx(0.008) and not b["capped"]
    b = viz.probability_bounds(0.01, 0.2, 0.28)  # DAPO clip-higher: 0.01 x 1.28
    assert b["up"] == pytest.approx(0.0128) and b["up_clip"] == pytest.approx(0.0128)
    b = viz.probability_bounds(0.9, 0.2, 0.28)  # 0.9 x 1.28 = 1.152 > 1: capped by 1; down 0.9 x 0.8 = 0.72
    assert b["up"] == 1.0 and b["capped"] and b["up_clip"] == pytest.approx(1.152)
    assert b["down"] == pytest.approx(0.72) and b["ratio_at_one"] == pytest.approx(1 / 0.9)
    b = viz.probability_bounds(0.9, 0.2, 0.3)  # the note's 1.17 is impossible
    assert b["up"] == 1.0 and b["up_clip"] == pytest.approx(1.17)
    b = viz.probability_bounds(0.01, 0.1, 0.2)  # eps_low = 0.1 limits the FALL: 0.009; the rise is eps_high's
    assert b["down"] == pytest.approx(0.009) and b["up"] == pytest.approx(0.012)
    b = viz.probability_bounds(0.5, 0.2, 0.28)
    assert b["up"] == pytest.approx(0.64) and not b["capped"]


@pytest.mark.parametrize("args", [(0.0, 0.2, 0.2), (1.5, 0.2, 0.2), (0.5, 1.0, 0.2), (0.5, 0.2, -0.1)])
def test_probability_bounds_rejects_bad_input(args):
    with pytest.raises(ValueError):
        viz.probability_bounds(*args)


def test_bounds_text():
    text = viz.bounds_text(0.01, 0.2, 0.28)
    assert "min(1, 0.01 x 1.28) = 0.0128" in text and "0.01 x 0.8 = 0.008" in text
    assert "never acts" not in text
    text = viz.bounds_text(0.9, 0.2, 0.3)
    assert "min(1, 0.9 x 1.3) = 1 (" in text and "never acts" in text and "1.17" not in text


def test_clip_state_collects_everything():
    s = viz.clip_state(0.2, 0.28, -1, 0.5, r_max=2.0, n_points=5)
    close(s["curve"]["ratio"], [0.0, 0.5, 1.0, 1.5, 2.0])
    # A = -1: min(-r, -clip(r)): r=0 -> -0.8, 0.5 -> -0.8, 1 -> -1, 1.5 -> -1.5, 2 -> -2
    close(s["curve"]["objective"], [-0.8, -0.8, -1.0, -1.5, -2.0])
    assert s["zero_grad_region"] == (0.0, 0.8)
    assert s["bounds"]["down"] == pytest.approx(0.4)
    assert [b["p_old"] for b in s["table"]] == list(viz.TABLE_PROBS)
    assert s["text"] == viz.bounds_text(0.5, 0.2, 0.28)


# ------------------------------------------------------------------------ KL

# Two tokens, p = pi_theta = [0.5, 0.5], q = pi_ref = [0.9, 0.1]; rho = q / p = [1.8, 0.2]:
#   KL = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5 ln(25/9) = 0.5108256
#   k1 = -ln rho = [-0.5877867, 1.6094379]; mean = KL; std = (1.6094379 + 0.5877867) / 2 = ln 3
#   k2 = (ln rho)^2 / 2 = [0.1727466, 1.2951452]; mean 0.7339459
#   k3 = rho - 1 - ln rho = [0.2122133, 0.8094379]; mean = KL; std = (0.8094379 - 0.2122133) / 2 = 0.2986123
P, Q = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([0.9, 0.1], dtype=torch.float64)
KL_PQ = 0.5 * math.log(25 / 9)


def test_kl_moments_by_hand():
    m = viz.kl_moments(P, Q)
    assert m["kl"] == pytest.approx(KL_PQ, abs=1e-12)
    assert m["k1"]["mean"] == pytest.approx(KL_PQ, abs=1e-12) and m["k1"]["std"] == pytest.approx(math.log(3))
    assert m["k1"]["min"] == pytest.approx(math.log(0.5 / 0.9))
    assert m["k2"]["mean"] == pytest.approx(0.5 * (0.5 * math.log(1.8) ** 2 + 0.5 * math.log(0.2) ** 2))
    assert m["k2"]["bias"] == pytest.approx(0.7339459 - 0.5108256, abs=1e-6)
    assert m["k3"]["mean"] == pytest.approx(KL_PQ, abs=1e-12) and m["k3"]["bias"] == pytest.approx(0.0, abs=1e-12)
    assert m["k3"]["std"] == pytest.approx((0.8094379 - 0.2122133) / 2, abs=1e-6)
    assert m["k3"]["min"] == pytest.approx(0.8 - math.log(1.8))


def test_kl_pair():
    p_theta, p_ref = viz.kl_pair(0.0)
    assert torch.equal(p_theta, p_ref) and p_ref.sum().item() == pytest.approx(1.0)
    assert p_ref.argmax().item() == 0
    m0 = viz.kl_moments(p_theta, p_ref)
    assert m0["kl"] == 0.0 and all(m0[k]["mean"] == 0.0 and m0[k]["std"] == 0.0 for k in ("k1", "k2", "k3"))
    kls = [viz.kl_moments(*viz.kl_pair(d))["kl"] for d in (0.5, 1.0, 2.0)]
    assert 0 < kls[0] < kls[1] < kls[2]  # further apart, larger KL


def test_kl_estimator_stats_sampling():
    s = viz.kl_estimator_stats(P, Q, n_samples=4000, seed=0)
    assert s["kl"] == pytest.approx(KL_PQ) and len(s["samples"]["k1"]) == 4000
    for est in ("k1", "k3"):  # unbiased: within 5 standard errors of the exact KL
        assert abs(s[est]["sample_mean"] - KL_PQ) < 5 * s[est]["se"]
    assert s["k2"]["sample_mean"] - KL_PQ > 5 * s["k2"]["se"]  # biased upwards here
    # k1 is negative exactly at token 0 (probability 0.5); k2, k3 never
    assert s["k1"]["frac_negative"] == pytest.approx(0.5, abs=0.05)
    assert s["k2"]["frac_negative"] == 0.0 and s["k3"]["frac_negative"] == 0.0
    assert s["k3"]["sample_std"] == pytest.approx(s["k3"]["std"], rel=0.05)
    again = viz.kl_estimator_stats(P, Q, n_samples=4000, seed=0)
    assert torch.equal(again["samples"]["tokens"], s["samples"]["tokens"])  # seeded
    with pytest.raises(ValueError):
        viz.kl_estimator_stats(P, Q, n_samples=1)


def test_kl_table_text():
    text = viz.kl_table_text(viz.kl_estimator_stats(P, Q, n_samples=10, seed=0))
    assert "exact KL(pi_theta || pi_ref) = 0.5108, n = 10 samples" in text
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["k1", "k2", "k3"]
    assert "-0.0000" not in text


# --------------------------------------------------------------- aggregation


def test_token_weights_by_hand():
    # N = 2, lengths 2 and 8: grpo 1/(N |o_n|) = 1/4, 1/16; bnpo 1/10; dr_grpo 1/(N L) with L = 8: 1/16;
    # seq_sum 1/N = 1/2; dr_grpo with max_completion_length 10: 1/20.
    close(viz.token_weights([2, 8], "grpo"), [1 / 4, 1 / 16])
    close(viz.token_weights([2, 8], "bnpo"), [1 / 10, 1 / 10])
    close(viz.token_weights([2, 8], "dapo"), [1 / 10, 1 / 10])
    close(viz.token_weights([2, 8], "dr_grpo"), [1 / 16, 1 / 16])
    close(viz.token_weights([2, 8], "dr_grpo", max_completion_length=10), [1 / 20, 1 / 20])
    close(viz.token_weights([2, 8], "seq_sum"), [1 / 2, 1 / 2])


# ------------------------------------------------------------------- drawing


def test_plot_clip_cases_draws_both_signs():
    fig = viz.plot_clip_cases(0.2, 0.28, p_old=0.9)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["A > 0: objective (|A| = 1)", "A < 0: objective (|A| = 1)",
                      "A > 0: gradient in r", "A < 0: gradient in r"]
    # each panel: the zero-gradient span and, for p_old = 0.9 (r > 1.11 impossible), the hatched span
    assert all(len(ax.patches) == 2 for ax in fig.axes)
    plt.close(fig)
    fig = viz.plot_clip_cases(0.2, 0.28)  # no p_old: no hatch
    assert all(len(ax.patches) == 1 for ax in fig.axes)
    plt.close(fig)


# ------------------------------------------------------------------- widgets


def test_clip_explorer_recomputes_on_every_control():
    plt.close("all")
    w = viz.clip_explorer(eps_low=0.2, eps_high=0.2, adv_sign=1, p_old=0.01)
    assert w.state["bounds"]["up"] == pytest.approx(0.012)
    assert w.state["zero_grad_region"] == (1.2, math.inf)
    w.eps_high.value = 0.28
    assert w.state["eps_high"] == 0.28 and w.state["bounds"]["up"] == pytest.approx(0.0128)
    assert w.state["zero_grad_region"] == (1.28, math.inf)
    assert "min(1, 0.01 x 1.28) = 0.0128" in w.bounds.value
    w.p_old.value = 0.9
    assert w.state["bounds"]["up"] == 1.0 and w.state["bounds"]["capped"]
    assert "never acts" in w.bounds.value
    w.adv_sign.value = -1
    assert w.state["zero_grad_region"] == (0.0, 0.8)
    assert w.state["curve"]["grad"].min().item() == -1.0  # A = -1 now
    w.eps_low.value = 0.1
    assert w.state["zero_grad_region"] == (0.0, 0.9) and w.state["bounds"]["down"] == pytest.approx(0.81)
    assert "0.9 x 0.9 = 0.81" in w.bounds.value
    before = w.state["zero_grad_region"]
    w.eps_high.value = 0.5  # with A < 0 the upper bound changes nothing in the curve
    assert w.state["zero_grad_region"] == before
    assert plt.get_fignums() == []  # no redraw leaves a figure open in pyplot
    assert w._repr_mimebundle_()  # displayable


def test_kl_explorer_recomputes_on_every_control():
    plt.close("all")
    w = viz.kl_explorer(distance=1.0, n_samples=32)
    assert w.state["kl"] == pytest.approx(viz.kl_moments(*viz.kl_pair(1.0))["kl"])
    assert len(w.state["samples"]["k3"]) == 32 and "n = 32 samples" in w.table.value
    w.distance.value = 0.0
    assert w.state["kl"] == 0.0
    assert all(torch.equal(w.state["samples"][k], torch.zeros(32, dtype=torch.float64)) for k in ("k1", "k2", "k3"))
    w.distance.value = 2.0
    w.n_samples.value = 500
    assert len(w.state["samples"]["k1"]) == 500 and "n = 500 samples" in w.table.value
    assert w.state["k3"]["frac_negative"] == 0.0 and w.state["k1"]["frac_negative"] > 0.0
    tokens = w.state["samples"]["tokens"].clone()
    w.seed.value = 1
    assert not torch.equal(tokens, w.state["samples"]["tokens"])
    assert plt.get_fignums() == []


@pytest.mark.parametrize("module, drawer, make", [
    ("clip", "draw_clip_axes", lambda: viz.clip_explorer()),
    ("kl", "draw_kl_axes", lambda: viz.kl_explorer(n_samples=16)),
])
def test_explorers_draw_on_figures_pyplot_does_not_know(monkeypatch, module, drawer, make):
    """While an explorer draws, pyplot has no open figure: its figure is a bare matplotlib Figure.

    In JupyterLab 4.6 (ipykernel 7) a kernel subshell thread runs the post-execute hooks after each widget
    message it handles, and the inline backend's hook draws and closes every open pyplot figure: a figure made
    with plt.subplots in a callback on the main thread was drawn by both threads at once (the browser test saw
    matplotlib's "ParseException ... at char 0" and an empty Output).
    """
    import importlib

    mod = importlib.import_module(f"minigrpo.course.viz.{module}")
    plt.close("all")
    open_during_draw = []
    original = getattr(mod, drawer)

    def spy(*args, **kwargs):
        open_during_draw.append(plt.get_fignums())
        return original(*args, **kwargs)

    monkeypatch.setattr(mod, drawer, spy)
    make()
    assert open_during_draw == [[]]


@pytest.mark.parametrize("make", [lambda: viz.clip_explorer(), lambda: viz.kl_explorer(n_samples=16)])
def test_an_explorer_error_is_printed_under_the_widget_and_raised(monkeypatch, make):
    """A callback that raises shows its traceback in the widget's Output (ipywidgets would send it only to the
    kernel's log, and the learner would see a frozen figure) and still raises (a cell that sets a value fails)."""
    w = make()
    control = w.eps_high if hasattr(w, "eps_high") else w.distance

    def broken(*args, **kwargs):
        raise RuntimeError("drawing went wrong")

    monkeypatch.setattr(w, "draw", broken)
    with pytest.raises(RuntimeError, match="drawing went wrong"):
        control.value = 0.5
    shown = [o for o in w.out.outputs if o.get("name") == "stderr"]
    assert len(shown) == 1 and "RuntimeError: drawing went wrong" in shown[0]["text"]
    assert "Traceback (most recent call last)" in shown[0]["text"]


# ------------------------------------------------------------- clip scrubber (lesson 09)

from minigrpo.course.viz import scrub  # noqa: E402

# One traced step, worked out by hand: eps 0.2 / 0.28, two groups of G = 2.
TRACE = {"step": 10, "eps_low": 0.2, "eps_high": 0.28, "groups": 2, "completions": [
    {"tokens": ["4", "<eos>"], "advantage": 1.0, "correct": True, "entropy": [0.5, 0.0],
     "ratios": [[1.0, 1.0], [1.3, 1.1]]},                 # update 2: "4" above 1.28 with A > 0 -> high
    {"tokens": ["5", "<eos>"], "advantage": -1.0, "correct": False, "entropy": [1.0, 2.0],
     "ratios": [[1.0, 1.0], [0.7, 0.85]]},                # update 2: "5" below 0.8 with A < 0 -> low
    {"tokens": ["x", "=", "<eos>"], "advantage": -0.5, "correct": False, "entropy": [0.1, 0.1, 0.1],
     "ratios": [[1.0, 1.0, 1.0], [1.5, 0.9, 1.0]]},       # A < 0 above 1: never clipped, whatever r
    {"tokens": ["7"], "advantage": 0.5, "correct": True, "entropy": [0.3], "ratios": [[1.0], [0.5]]}]}


def test_token_states_and_clip_counts_by_hand():
    first = scrub.token_states(TRACE["completions"][0], 0.2, 0.28, update=1)
    assert [s["clip"] for s in first] == ["high", None] and first[0]["ratio"] == 1.3
    assert [s["clip"] for s in scrub.token_states(TRACE["completions"][1], 0.2, 0.28, 1)] == ["low", None]
    assert [s["clip"] for s in scrub.token_states(TRACE["completions"][2], 0.2, 0.28, 1)] == [None] * 3
    assert [s["clip"] for s in scrub.token_states(TRACE["completions"][3], 0.2, 0.28, 1)] == [None]
    assert scrub.clip_counts(TRACE, 1) == {"low": 1, "high": 1, "tokens": 8}
    assert scrub.clip_counts(TRACE, 0) == {"low": 0, "high": 0, "tokens": 8}   # update 1: every ratio is 1


def test_token_colors_by_hand():
    s = {"ratio": 1.28, "clip": "high", "entropy": 1.0, "advantage": -2.0}
    assert scrub.token_color(s, "clip", 0.2, 0.28) == "#1f77b4"
    assert scrub.token_color(s, "ratio", 0.2, 0.28) == "#1f77b4"                   # at the bound: full blue
    assert scrub.token_color({**s, "ratio": 0.95}, "ratio", 0.2, 0.28) == "#f5c9c9"  # a quarter of the way to 0.8
    assert scrub.token_color({**s, "ratio": 1.0}, "ratio", 0.2, 0.28) == "#ffffff"
    assert scrub.token_color({**s, "entropy": 0.5}, "entropy", 0.2, 0.28) == "#ffdfc3"   # a quarter of max 2
    assert scrub.token_color(s, "advantage", 0.2, 0.28) == "#d62728"               # A = -2: full red
    with pytest.raises(ValueError, match="by='size'"):
        scrub.token_color(s, "size", 0.2, 0.28)


def test_group_html_lays_out_each_token_with_its_colour():
    html = scrub.group_html(TRACE, group=0, update=1, by="clip")
    assert html.count('class="completion"') == 2 and html.count('class="tok"') == 4
    assert 'background:#1f77b4">4</span>' in html and 'background:#d62728">5</span>' in html
    assert "&lt;eos&gt;" in html and "r = 1.3000" in html and "A = +1.00 right" in html
    assert scrub.group_html(TRACE, group=1, update=1, by="clip").count('class="tok"') == 4
    assert scrub.scrub_text(TRACE, 0, 1) == ("step 10, group 1, update 2 of 2: 1 of 8 traced tokens at 1 - eps_low, "
                                             "1 at 1 + eps_high")


def test_clip_scrubber_redraws_on_every_control():
    w = scrub.clip_scrubber([TRACE, {**TRACE, "step": 20}])
    assert w.update.value == 1 and "step 10, group 1, update 2 of 2" in w.caption.value   # starts at the last update
    w.step.value = 1
    assert "step 20" in w.caption.value
    w.update.value = 0
    assert "0 at 1 + eps_high" in w.caption.value and "#1f77b4" not in w.tokens.value
    w.group.value = 1
    assert ">x</span>" in w.tokens.value
    w.by.value = "entropy"
    assert 'background:#fff9f3">x</span>' in w.tokens.value          # entropy 0.1: 1/20 of the way to orange
    before = w.tokens.value
    w.by.value = "advantage"
    assert w.tokens.value != before
