"""The doctor's verdicts, and its rules on a run's metric rows during training (the trainer's Watch).

A Finding is one line: OK, WARN or FAIL, the measured number, why it matters, the fix, the lesson that
explains it. `Watch(cfg).check(row)` returns a diagnosis the first time a rule fires on the logged rows;
`python -m minigrpo doctor` (doctor.py) checks a run before it starts with Findings of the same form.
"""
from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("OK", "WARN", "FAIL")


@dataclass
class Finding:
    """One rule's verdict: level (OK | WARN | FAIL), what was measured, why it matters, the fix, the lesson."""
    level: str
    rule: str
    measured: str
    why: str
    fix: str = ""
    lesson: str = ""

    def line(self) -> str:
        fix = f" Fix: {self.fix}" if self.fix and self.level != "OK" else ""
        see = f" (lesson {self.lesson})" if self.lesson else ""
        return f"{self.level:4} {self.rule}: {self.measured}. {self.why}.{fix}{see}"


class Watch:
    """The rules, on the logged metric rows: each fires once, with a one-line diagnosis (returned, and kept in
    the row's "doctor" field by the trainer). Windows are the last `window` steps, so one noisy step is not a
    diagnosis."""

    def __init__(self, cfg, window: int = 10):
        self.cfg, self.window = cfg, window
        self.rows, self.fired = [], set()

    def check(self, row: dict) -> list[str]:
        self.rows.append(row)
        out = []
        for f in self._rules():
            if f.rule not in self.fired:
                self.fired.add(f.rule)
                out.append(f"step {row.get('step', len(self.rows))}: {f.line()}")
        return out

    def _mean(self, key: str, rows=None) -> float | None:
        rows = self.rows[-self.window:] if rows is None else rows
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return sum(values) / len(values) if values else None

    def _rules(self) -> list[Finding]:
        cfg, last = self.cfg, self.rows[-1]
        full = len(self.rows) >= self.window
        out = []
        if abs(last.get("loss", 1.0)) < 1e-6 and last.get("grad_norm", 0.0) > 1e-6:
            out.append(Finding("OK", "loss is 0", f"loss {last['loss']:.1e} with gradient norm "
                               f"{last['grad_norm']:.2g}", "normal: at theta = theta_old the group-normalised "
                               "advantages sum to 0, so the loss does too, but its gradient does not", "", "4"))
        if not full:
            return out
        zero = self._mean("zero_var_frac")
        if zero is not None and zero > 0.9:
            out.append(Finding("WARN", "no signal", f"{100 * zero:.0f}% of groups had equal rewards over the last "
                               f"{self.window} steps", "the prompts are too easy or too hard for the policy now",
                               "--dynamic_sampling true, or harder prompts", "9"))
        trunc = self._mean("truncated_frac")
        if trunc is not None and trunc > 0.2:
            out.append(Finding("WARN", "truncation", f"{100 * trunc:.0f}% of completions cut off at "
                               f"max_new_tokens={cfg.max_new_tokens}", "a cut-off completion gets reward 0",
                               "raise --max_new_tokens (or --overlong_cache)", "9"))
        clip = self._mean("clip_low") + self._mean("clip_high") if self._mean("clip_low") is not None else 0.0
        if clip > 0.2:
            out.append(Finding("WARN", "clipping", f"{100 * clip:.0f}% of tokens clipped",
                               "each update moves the policy past the trust region", "a lower --lr", "3"))
        first = self._mean("entropy", self.rows[:self.window])
        now = self._mean("entropy")
        if first and now is not None and now < 0.2 * first and clip == 0.0:
            out.append(Finding("WARN", "entropy collapse", f"entropy {now:.3g}, from {first:.3g}, with nothing "
                               "clipped", "the policy is turning deterministic and stops exploring",
                               "clip-higher (--eps_high 0.28) with --num_iterations 2, or a lower --lr", "9"))
        start_len = self._mean("completion_len", self.rows[:self.window])
        now_len = self._mean("completion_len")
        if start_len and now_len is not None and now_len > 1.5 * start_len:
            out += self._longer(start_len, now_len)
        kl_first, kl_now = self._mean("kl_ref", self.rows[:self.window]), self._mean("kl_ref")
        if cfg.beta == 0 and kl_now is not None and kl_now > 0.1 and kl_now > 2 * (kl_first or 0.0):
            out.append(Finding("WARN", "drift", f"KL of the samples to the start {kl_now:.3g}, from {kl_first:.3g}",
                               "with beta = 0 nothing holds the policy near where it started", "--beta 0.04, or a "
                               "lower --lr", "11"))
        kl_first, kl_now = self._mean("kl", self.rows[:self.window]), self._mean("kl")
        if cfg.beta > 0 and kl_now is not None and kl_now > 0.1 and kl_now > 2 * (kl_first or 0.0):
            out.append(Finding("WARN", "rising KL", f"KL to the reference {kl_now:.3g}, from {kl_first:.3g}",
                               f"beta={cfg.beta:g} no longer holds the policy near the reference",
                               "a lower --lr or a larger --beta", "4"))
        return out

    def _longer(self, start_len: float, now_len: float) -> list[Finding]:
        """Answers got 1.5x longer. Paid for when the right answers are now at least as long as the wrong ones
        and the reward rose (the long answers are the right ones: lesson 11); a per-sequence loss's bias
        (Dr. GRPO) when the wrong answers are now longer than the right ones by a fifth; else no verdict."""
        early = self.rows[:self.window]
        right, wrong = self._mean("len_correct"), self._mean("len_wrong")
        reward_first, reward_now = self._mean("reward_mean", early), self._mean("reward_mean")
        measured = f"mean completion {now_len:.1f} tokens, from {start_len:.1f}"
        if right is not None:
            measured += f"; right answers {right:.1f} tokens, wrong ones " + (f"{wrong:.1f}" if wrong else "none")
        rose = reward_first is not None and reward_now is not None and reward_now > reward_first
        if right is not None and (wrong is None or right >= wrong) and rose:
            return [Finding("OK", "length paid for", measured, "the long answers are the right ones and the reward "
                            "rose: the reward pays for what they write", "", "11")]
        if right is None or (wrong is not None and wrong > 1.2 * right):
            return [Finding("WARN", "longer answers", measured, "length the reward pays for, or a per-sequence loss "
                            "that favours long wrong answers", "--loss_type dapo or dr_grpo", "9")]
        return []
