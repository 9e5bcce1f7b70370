"""The metrics logger writes one JSON row per step and the plotter reads it back."""
import matplotlib

matplotlib.use("Agg")

from minigrpo.logger import STEP_KEYS, MetricsLogger, read_metrics
from minigrpo.plot import plot_metrics


def test_rows_round_trip_and_append(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    log = MetricsLogger(str(path))
    log.log({"step": 1, "reward_mean": 0.5})
    log.log({"step": 2, "reward_mean": 0.75, "eval_accuracy": 0.25})
    assert read_metrics(str(path)) == [{"step": 1, "reward_mean": 0.5},
                                       {"step": 2, "reward_mean": 0.75, "eval_accuracy": 0.25}]
    again = MetricsLogger(str(path), append=True)   # a resumed run keeps the rows so far
    again.log({"step": 3, "reward_mean": 1.0})
    assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3]
    fresh = MetricsLogger(str(path))                 # a new run starts a new file
    assert read_metrics(str(path)) == [] and fresh.rows == []


def test_resume_drops_rows_after_the_checkpointed_step(tmp_path):
    # a run logged step 3, then stopped before its step-4 checkpoint: resuming from step 2 redoes step 3
    path = tmp_path / "metrics.jsonl"
    log = MetricsLogger(str(path))
    for s in (1, 2, 3):
        log.log({"step": s})
    again = MetricsLogger(str(path), append=True, upto_step=2)
    assert [r["step"] for r in again.rows] == [1, 2]
    again.log({"step": 3})
    assert [r["step"] for r in read_metrics(str(path))] == [1, 2, 3]


def test_plot_reads_the_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLogger(str(path))
    for s in range(1, 6):
        log.log({"step": s, "reward_mean": s / 5, "kl": 0.0, "eval_accuracy": s / 10})
    fig = plot_metrics(str(path), start={"eval_accuracy": 0.05})
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["reward_mean", "eval_accuracy"]          # kl is 0 at every step: no empty panel ...
    assert "not drawn, 0 at every step: kl" in [t.get_text() for t in fig.texts]   # ... but a line that says so
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [0.2, 0.4, 0.6, 0.8, 1.0]
    evals = fig.axes[1].get_lines()[0]                          # the evaluation curve starts at step 0
    assert list(evals.get_xdata()) == [0, 1, 2, 3, 4, 5] and list(evals.get_ydata())[:2] == [0.05, 0.1]
    assert fig.axes[1].get_ylabel() == "held-out accuracy (greedy)" and fig.axes[1].get_xlabel() == "GRPO step"


def test_step_keys_are_documented():
    assert STEP_KEYS[0] == "step" and len(set(STEP_KEYS)) == len(STEP_KEYS)
    for key in ("reward_mean", "reward_std", "accuracy", "zero_var_frac", "kl", "entropy",
                "clip_low", "clip_high", "completion_len", "sample_s", "learn_s"):
        assert key in STEP_KEYS
