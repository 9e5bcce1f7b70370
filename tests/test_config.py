"""Config: presets, overrides and one-line errors for out-of-range values."""
import re

import pytest

from minigrpo.config import PRESETS, Config, make_config


def test_default_is_cpu_preset():
    assert make_config() == Config(preset="cpu")


def test_presets_and_overrides():
    cfg = make_config("gpu", steps=7)
    assert cfg.task == "arithmetic_hard" and cfg.steps == 7 and cfg.preset == "gpu"
    assert make_config("equations").reward == "rubric"
    for name in PRESETS:
        make_config(name)  # every preset is valid


@pytest.mark.parametrize("field,value,words", [
    ("group_size", 1, "group_size=1"),
    ("eps_low", -0.1, "eps_low=-0.1"),
    ("eps_low", 1.0, "eps_low=1.0"),
    ("eps_high", -0.2, "eps_high=-0.2"),
    ("beta", -1.0, "beta=-1.0"),
    ("temperature", 0.0, "temperature=0.0"),
    ("top_p", 0.0, "top_p=0.0"),
    ("loss_type", "ppo", "grpo"),
    ("kl_estimator", "k4", "k3"),
    ("scale", "global", "group"),
    ("task", "chess", "arithmetic"),
    ("max_new_tokens", 0, "max_new_tokens=0"),
    ("max_seq_len", 4, "max_seq_len=4"),
    ("hidden_size", 130, "hidden_size=130"),
    ("loss_type", "cispo2", "cispo"),
    ("importance_sampling_level", "group", "token, sequence"),
    ("old_logps", "cache", "sampler, recompute"),
    ("delta", 0.9, "delta=0.9 must be 0 (off) or > 1"),
    ("overlong_cache", 6, "overlong_cache=6 must be below max_new_tokens=6"),
    ("max_sampling_rounds", 0, "max_sampling_rounds=0 must be >= 1"),
])
def test_bad_values_name_the_field(field, value, words):
    with pytest.raises(ValueError) as e:
        make_config("cpu", **{field: value})
    assert words in str(e.value) and "\n" not in str(e.value)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset 'huge'.*cpu"):
        make_config("huge")
    with pytest.raises(ValueError, match="unknown config field 'stepz'"):
        make_config("cpu", stepz=3)


@pytest.mark.parametrize("reward, task, words", [
    ("nope", "arithmetic", "unknown reward 'nope'"),
    ("correct:x", "arithmetic", "reward weight 'x'"),
    ("rubric", "arithmetic", "rubric, which scores equation solutions"),
    ("correct:1,rubric:0.5", "arithmetic_hard", "use it with task='equations'"),
])
def test_bad_reward_is_refused_before_any_training(reward, task, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        make_config("cpu", reward=reward, task=task)


def test_dynamic_sampling_and_ppo_do_not_mix():
    with pytest.raises(ValueError, match="dynamic_sampling=True with algo='ppo'"):
        make_config("cpu", algo="ppo", dynamic_sampling=True)


def test_log_kl_and_ppo_do_not_mix():
    with pytest.raises(ValueError, match="log_kl=True with algo='ppo'"):
        make_config("cpu", algo="ppo", log_kl=True)
    assert make_config("long", log_kl=True).log_kl
