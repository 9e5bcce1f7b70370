"""The lessons' widgets as a learner meets them: JupyterLab in headless Chromium, driven with the keyboard.

Lesson 03's clip explorer and lesson 04's KL explorer are opened in a real
JupyterLab (helpers in tests/jupyterlab_browser.py), run with Run > Run All
Cells, and moved with the keyboard. Each test then reads only what the page
shows, the slider readouts, the printed text and the figure, and checks it
against numbers derived here from the formulas: DAPO's decoupled clip
(Yu et al., 2025, 3.1) for the bounds, the KL between two softmaxes and the
means of Schulman's k1, k2, k3 for the table. Lesson 06 is run too, for the
progress bar of its live training (tqdm.auto draws it as a widget); lesson 07's
bar is the same code and is left to nbval, to save its minute of training.
Lesson 09's clip scrubber is scrubbed through steps, groups and updates with the
keyboard; its caption must count the clipped tokens as the rule of DAPO's clip
gives them, from the committed tokens.jsonl read here. The Chinese edition's
lesson 03 (notebooks/zh/) is opened too: its Chinese title must be drawn in real
glyphs, not the empty boxes of a machine without a CJK font, and its clip
explorer must follow the keyboard as the English one does.
A missing ipywidgets front-end, an Output widget that never renders, or a
callback that raises in the kernel fails here, though tests/test_viz.py
passes. On failure, a screenshot, the page's HTML and the server log go to
test-artifacts/browser/.

Needs playwright (the dev extra) and Debian's Chromium (`apt-get install
chromium`, or CHROMIUM=/path/to/chrome). Without them the tests are skipped,
except under CI=true, where they fail: CI cannot pass without running them.
"""
import math
import os
import re

import pytest

from jupyterlab_browser import CHROMIUM_ARGS, PANEL, REPO, VIEWPORT, LabServer, LessonPage, find_chromium, keep_evidence

LESSONS = ("03_clipping.ipynb", "04_kl_and_objective.ipynb", "06_train_arithmetic.ipynb", "09_the_grpo_family.ipynb")
UPDATE_TIMEOUT = 60.0  # seconds for the kernel to answer one key press (generous: 2 busy cores)


# ------------------------------------------------------------------ fixtures


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if find_chromium() is None and os.environ.get("CHROMIUM"):
        return f"CHROMIUM={os.environ['CHROMIUM']} is not an executable"
    if find_chromium() is None:
        return "Chromium is not installed (Debian: apt-get install chromium; elsewhere set CHROMIUM=/path/to/chrome)"
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium under Playwright; skips without it, fails without it under CI=true."""
    missing = _missing()
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{missing}; CI must run the browser tests")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lab(browser):
    """One JupyterLab server for the module, stopped (kernels included) even when a test fails."""
    with LabServer([REPO / "notebooks" / name for name in LESSONS]) as server:
        yield server


@pytest.fixture
def page(browser, lab):
    """A fresh browser page; afterwards its lesson's kernel is shut down, so the next lesson has the CPU."""
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.set_default_timeout(60_000)
    yield p
    context.close()
    lab.shutdown_kernels()


def expect(lesson: LessonPage, mismatches, what: str) -> None:
    """Wait until `mismatches()` (a list of what the page shows wrong) is empty and the kernel is idle."""
    last = []

    def shown_right() -> bool:
        last[:] = mismatches()
        return not last and lesson.kernel_status() == "idle"

    lesson.wait_for(shown_right, UPDATE_TIMEOUT, lambda: f"{what}: " + ("; ".join(last) or "the kernel stayed busy"))


def near(shown: str, expected: float, rel: float) -> bool:
    """The number the page shows is `expected` to within `rel`; False if it is not a number."""
    try:
        return math.isclose(float(shown), expected, rel_tol=rel, abs_tol=1e-12)
    except ValueError:
        return False


def figure(widget) -> str:
    """The figure an Output widget shows now: the src of its one <img>, once the browser has decoded it."""
    img = widget.locator(".widget-output img")
    assert img.count() == 1, f"the widget's Output shows {img.count()} images, expected 1 figure"
    assert img.evaluate("i => i.complete && i.naturalWidth > 0"), "the figure is not a decodable image"
    return img.get_attribute("src")


def slider(widget, description: str):
    """(handle, readout) of the slider labelled `description`."""
    box = widget.locator(".widget-slider", has=widget.page.locator(".widget-label", has_text=re.compile(
        f"^{re.escape(description)}$")))
    assert box.count() == 1, f"{box.count()} sliders labelled {description!r}, expected 1"
    return box.locator(".noUi-handle"), box.locator(".widget-readout")


def rendered_widget(lesson: LessonPage, source: str, kind: str = "widget-vbox"):
    """The widget (a box of class `kind`) shown by the cell whose source contains `source`.

    Fails with what the cell shows instead: without ipywidgets' front-end, JupyterLab prints the widget's
    text form, "VBox(children=(HBox(...".
    """
    out = lesson.output_of(source)
    widget = out.locator(f".jupyter-widgets.{kind}").first
    lesson.wait_for(lambda: widget.count() == 1 and widget.is_visible(), UPDATE_TIMEOUT,
                    lambda: f"the cell with {source!r} did not render its widget; its output shows: "
                            f"{out.inner_text()[:500]!r}")
    widget.scroll_into_view_if_needed()
    return widget


# ------------------------------------------------------------ lesson 03: clip


def clip_bounds(p_old: float, eps_low: float, eps_high: float) -> dict:
    """DAPO's decoupled clip by hand: one update takes a token of probability p_old at most up to
    min(1, p_old (1+eps_high)) when A > 0 (capped when probability 1 comes first), at least down
    to p_old (1-eps_low) when A < 0."""
    return {"p_old": p_old, "eps_low": eps_low, "eps_high": eps_high, "up": min(1.0, p_old * (1 + eps_high)),
            "down": p_old * (1 - eps_low), "capped": p_old * (1 + eps_high) > 1}


BOUNDS = re.compile(r"p_old = (?P<p_old>\S+), eps_low = (?P<eps_low>\S+), eps_high = (?P<eps_high>\S+)\n"
                    r"A > 0: pushed up to at most min\(1, \S+ x \S+\) = (?P<up>\S+)(?P<capped> \(probability 1.*)?\n"
                    r"A < 0: pushed down to at least \S+ x \S+ = (?P<down>\S+)")


def clip_mismatches(widget, eps_low: float, eps_high: float, p_old: float, sign: int) -> list[str]:
    """What the clip explorer on the page shows differently from these control values; [] if nothing."""
    wrong = []
    for name, value, rel in (("eps_low", eps_low, 1e-9), ("eps_high", eps_high, 1e-9), ("p_old", p_old, 5e-3)):
        readout = slider(widget, name)[1].inner_text()
        if not near(readout, value, rel):
            wrong.append(f"slider {name} reads {readout!r}, expected {value}")
    active = widget.locator(".widget-toggle-button.mod-active").all_inner_texts()
    if active != [("A > 0" if sign > 0 else "A < 0")]:
        wrong.append(f"advantage toggle shows {active} active, expected A {'>' if sign > 0 else '<'} 0")
    text = widget.locator(".widget-html pre").inner_text()
    m = BOUNDS.search(text)
    if m is None:
        return wrong + [f"printed bounds unreadable: {text!r}"]
    for key, value in clip_bounds(p_old, eps_low, eps_high).items():  # printed to 4 significant digits
        if key == "capped" and value != (m["capped"] is not None):
            wrong.append(f"printed bounds {'omit' if value else 'add'} the capped-by-1 note: {text!r}")
        elif key != "capped" and not near(m[key], value, 6e-4):
            wrong.append(f"printed {key} = {m[key]}, expected {value:.4g}")
    return wrong


def test_clip_explorer_follows_the_keyboard(lab, page):
    lesson = LessonPage(page, lab, "03_clipping.ipynb")
    with keep_evidence(lesson, "03_clipping"):
        lesson.open()
        lesson.run_all()
        drive_clip_explorer(lesson)


def drive_clip_explorer(lesson: LessonPage) -> None:
    """Move every control of lesson 03's clip explorer with the keyboard; the page must follow each move."""
    widget = rendered_widget(lesson, "explorer = viz.clip_explorer(")
    state = {"eps_low": 0.2, "eps_high": 0.28, "p_old": 0.01, "sign": 1}  # what the lesson sets, and restores

    def shows(what: str) -> str:
        expect(lesson, lambda: clip_mismatches(widget, **state), what)
        return figure(widget)

    start = shows("after Run All Cells, the clip explorer is not where the lesson left it")

    lesson.press(slider(widget, "eps_high")[0], "ArrowRight", 5)  # step 0.01
    state["eps_high"] = 0.33
    up = shows("eps_high moved 0.28 -> 0.33 with the keyboard")
    assert up != start, "the figure did not change when eps_high moved"

    lesson.press(widget.locator(".widget-toggle-button", has_text="A < 0"), "Space")
    state["sign"] = -1
    down = shows("advantage switched to A < 0 with the keyboard (the printed bounds cover both signs)")
    assert down != up, "the figure did not change when the advantage turned negative"
    lesson.press(widget.locator(".widget-toggle-button", has_text="A > 0"), "Space")
    state["sign"] = 1
    assert shows("advantage switched back to A > 0") == up, "same controls, yet a different figure"

    lesson.press(slider(widget, "eps_low")[0], "ArrowLeft", 5)
    state["eps_low"] = 0.15
    assert shows("eps_low moved 0.2 -> 0.15 with the keyboard") != up, "the figure did not change with eps_low"

    lesson.press(slider(widget, "p_old")[0], "End")  # the slider's maximum, probability 1
    state["p_old"] = 1.0
    shows("p_old moved to 1 with the End key: up to min(1, 1.33) = 1, capped")


# -------------------------------------------------------------- lesson 04: KL


def kl_by_hand(distance: float, vocab_size: int = 6) -> dict:
    """Exact KL(pi_theta || pi_ref) and E[k2] for the lesson's pair of distributions, in plain Python.

    pi_ref = softmax(z), pi_theta = softmax(z + distance * d), z = linspace(2, -1, V),
    d = linspace(-1, 1, V). E[k1] = E[k3] = KL (k3's extra term has mean sum(pi_ref) - 1 = 0);
    E[k2] = sum pi_theta (log r)^2 / 2.
    """
    z = [2 - 3 * i / (vocab_size - 1) for i in range(vocab_size)]
    d = [-1 + 2 * i / (vocab_size - 1) for i in range(vocab_size)]

    def softmax(x):
        e = [math.exp(v) for v in x]
        return [v / sum(e) for v in e]

    p, q = softmax([zi + distance * di for zi, di in zip(z, d)]), softmax(z)
    log_r = [math.log(pi / qi) for pi, qi in zip(p, q)]
    return {"kl": sum(pi * lr for pi, lr in zip(p, log_r)), "k2": sum(pi * lr * lr / 2 for pi, lr in zip(p, log_r))}


def kl_table(widget) -> dict:
    """The KL explorer's printed table: {"kl", "n", and per estimator [E[k], bias, std, mean of n, se, < 0]}."""
    text = widget.locator(".widget-html pre").inner_text()
    m = re.search(r"exact KL\(pi_theta \|\| pi_ref\) = (\S+), n = (\d+) samples", text)
    rows = {cells[0]: cells[1:] for cells in map(str.split, text.splitlines()) if cells[:1] in (["k1"], ["k2"], ["k3"])}
    return {"kl": m and m[1], "n": m and m[2], **rows, "text": text}


def kl_mismatches(widget, distance: float, n_samples: int, seed: int) -> list[str]:
    wrong = []
    for name, value in (("distance", distance), ("n samples", n_samples), ("seed", seed)):
        readout = slider(widget, name)[1].inner_text()
        if not near(readout, value, 1e-9):
            wrong.append(f"slider {name} reads {readout!r}, expected {value}")
    table, exact = kl_table(widget), kl_by_hand(distance)
    if table["kl"] is None or not all(k in table for k in ("k1", "k2", "k3")):
        return wrong + [f"printed table unreadable: {table['text']!r}"]
    expected = {("exact KL", table["kl"]): exact["kl"], ("n", table["n"]): n_samples,
                ("E[k1]", table["k1"][0]): exact["kl"], ("E[k2]", table["k2"][0]): exact["k2"],
                ("E[k3]", table["k3"][0]): exact["kl"], ("bias of k1", table["k1"][1]): 0.0,
                ("bias of k3", table["k3"][1]): 0.0}
    for (name, shown), value in expected.items():  # printed to 4 decimals
        if f"{float(shown):.4f}" != f"{value:.4f}":
            wrong.append(f"printed {name} = {shown}, expected {value:.4f}")
    return wrong


def test_kl_explorer_follows_the_keyboard(lab, page):
    lesson = LessonPage(page, lab, "04_kl_and_objective.ipynb")
    with keep_evidence(lesson, "04_kl_and_objective"):
        lesson.open()
        lesson.run_all()
        widget = rendered_widget(lesson, "kl_widget = viz.kl_explorer(")
        state = {"distance": 1.0, "n_samples": 64, "seed": 0}  # what the lesson sets, and restores

        def shows(what: str) -> str:
            expect(lesson, lambda: kl_mismatches(widget, **state), what)
            return figure(widget)

        start = shows("after Run All Cells, the KL explorer is not where the lesson left it")
        assert kl_table(widget)["kl"] == "0.1910"  # the lesson's worked example, pinned in its text

        lesson.press(slider(widget, "distance")[0], "ArrowRight", 5)  # step 0.05
        state["distance"] = 1.25
        farther = shows("distance moved 1.0 -> 1.25 with the keyboard")
        assert farther != start, "the figure did not change when the distance moved"

        lesson.press(slider(widget, "n samples")[0], "ArrowRight")
        state["n_samples"] = 65
        more = shows("n samples moved 64 -> 65 with the keyboard")
        assert more != farther, "the figure did not change with n"
        sample_means = [kl_table(widget)[k][3] for k in ("k1", "k2", "k3")]  # the "mean of n" column

        lesson.press(slider(widget, "seed")[0], "ArrowRight")
        state["seed"] = 1
        assert shows("seed moved 0 -> 1 with the keyboard: new samples, same exact columns") != more, \
            "the figure did not change with the seed"
        assert [kl_table(widget)[k][3] for k in ("k1", "k2", "k3")] != sample_means, "same sample means for a new seed"


# ------------------------------------------------------ lesson 06: training


def test_training_progress_bar_renders(lab, page):
    """Lesson 06 trains 50 GRPO steps live (about a minute); tqdm.auto must draw its bar as a widget."""
    lesson = LessonPage(page, lab, "06_train_arithmetic.ipynb")
    with keep_evidence(lesson, "06_train_arithmetic"):
        lesson.open()
        lesson.run_all()
        bar = rendered_widget(lesson, "live = train_grpo(", kind="widget-hbox")
        text = " ".join(bar.inner_text().replace("\u2007", " ").split())  # tqdm pads with figure spaces
        assert bar.locator(".widget-hprogress").count() == 1, f"no progress bar in the training cell: {text!r}"
        assert bar.locator(".progress-bar").evaluate("e => e.style.width") == "100%", f"the bar did not fill: {text!r}"
        # the lesson trains make_config("cpu", steps=50, ...)
        assert "GRPO: 100%" in text and "50/50" in text, f"the bar does not say 50 of 50 GRPO steps: {text!r}"


# ------------------------------------------------------ lesson 09: the clip scrubber


def clipped_by_hand(record: dict, update: int) -> tuple[int, int, int]:
    """(at 1 - eps_low, at 1 + eps_high, tokens) of one traced step: A < 0 and r < 1 - eps_low, A > 0 and
    r > 1 + eps_high, over every traced token at that update."""
    low = high = tokens = 0
    for c in record["completions"]:
        for r in c["ratios"][update]:
            tokens += 1
            low += c["advantage"] < 0 and r < 1 - record["eps_low"]
            high += c["advantage"] > 0 and r > 1 + record["eps_high"]
    return low, high, tokens


def test_clip_scrubber_follows_the_keyboard(lab, page):
    import json
    traces = [json.loads(line) for line in open(REPO / "results" / "cpu_family" / "mu4_s0" / "tokens.jsonl")]
    lesson = LessonPage(page, lab, "09_the_grpo_family.ipynb")
    with keep_evidence(lesson, "09_the_grpo_family"):
        lesson.open()
        lesson.run_all()
        widget = rendered_widget(lesson, "scrubber = viz.clip_scrubber(")
        state = {"trace": len(traces) - 1, "group": 0, "update": 3}   # where the lesson opens it

        def mismatches() -> list[str]:
            t = traces[state["trace"]]
            low, high, tokens = clipped_by_hand(t, state["update"])
            want = (f"step {t['step']}, group {state['group'] + 1}, update {state['update'] + 1} of 4: {low} of "
                    f"{tokens} traced tokens at 1 - eps_low, {high} at 1 + eps_high")
            shown = widget.locator(".widget-html b").inner_text()
            tokens_shown = widget.locator(".widget-html .completion").count()
            wrong = [] if shown == want else [f"caption {shown!r}, expected {want!r}"]
            return wrong + ([] if tokens_shown == t["groups"] else [f"{tokens_shown} completions shown, expected "
                                                                     f"{t['groups']}"])

        def shows(what: str) -> str:
            expect(lesson, mismatches, what)
            return widget.locator(".widget-html").nth(1).inner_html()

        start = shows("after Run All Cells, the scrubber is not at the last traced step's last update")
        lesson.press(slider(widget, "trace")[0], "ArrowLeft")
        state["trace"] -= 1
        earlier = shows("trace moved back one step with the keyboard")
        assert earlier != start, "the tokens did not change with the step"
        lesson.press(slider(widget, "group")[0], "ArrowRight")
        state["group"] = 1
        other = shows("group moved 1 -> 2 with the keyboard")
        assert other != earlier, "the tokens did not change with the group"
        lesson.press(slider(widget, "update")[0], "Home")
        state["update"] = 0
        first = shows("update moved to the first with the Home key: every ratio is (about) 1, nothing clipped")
        lesson.press(widget.locator(".widget-toggle-button", has_text="ratio"), "Space")
        assert shows("colour switched to the ratio") != first, "the colours did not change with the toggle"


# ------------------------------------------------------ the Chinese edition: lesson 03 in notebooks/zh/

GLYPHS = """(selector) => {
    // Each Chinese character of the lesson's title, drawn in the title's own font on a canvas. Without a CJK font
    // Chromium draws every one as the same empty box (.notdef), the box a character no font has is drawn as.
    const title = document.querySelector(selector);
    if (!title) return null;
    const font = getComputedStyle(title).fontFamily;
    const chars = Array.from(title.textContent).filter(c => /[\\u4e00-\\u9fff]/.test(c));
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 64;
    const ctx = canvas.getContext('2d');
    const draw = c => {
        ctx.clearRect(0, 0, 64, 64);
        ctx.font = `48px ${font}`;
        ctx.fillText(c, 4, 52);
        return Array.from(ctx.getImageData(0, 0, 64, 64).data).join(',');
    };
    const missing = draw('\\u{10FFFD}');
    const drawn = chars.map(draw);
    return {text: title.textContent, font, chars: chars.join(''), distinct: new Set(drawn).size,
            boxes: drawn.filter(d => d === missing).length};
}"""


@pytest.fixture
def lab_zh(browser):
    """A JupyterLab server for the Chinese lesson alone (its file name is the English lesson's)."""
    with LabServer([REPO / "notebooks" / "zh" / "03_clipping.ipynb"]) as server:
        yield server


def test_chinese_lesson_renders_and_its_widget_responds(browser, lab_zh):
    """notebooks/zh/03_clipping.ipynb: its Chinese title is drawn in real glyphs (a CJK font is installed), the
    lesson runs, and its clip explorer follows the keyboard as the English one does."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    lesson = LessonPage(page, lab_zh, "03_clipping.ipynb")
    try:
        with keep_evidence(lesson, "zh_03_clipping"):
            lesson.open()
            title = page.locator(f"{PANEL} .jp-MarkdownOutput h1").first
            title.wait_for()
            assert title.inner_text().startswith("第 3 课"), f"the Chinese lesson's title reads {title.inner_text()!r}"
            shown = page.evaluate(GLYPHS, f"{PANEL} .jp-MarkdownOutput h1")
            assert len(shown["chars"]) >= 4, f"too few Chinese characters in the title to judge: {shown}"
            assert shown["boxes"] == 0 and shown["distinct"] == len(set(shown["chars"])), \
                f"the title's Chinese characters are drawn as empty boxes: no CJK font (Debian: fonts-noto-cjk): {shown}"
            lesson.run_all()
            drive_clip_explorer(lesson)
    finally:
        context.close()
        lab_zh.shutdown_kernels()
