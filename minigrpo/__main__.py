"""Command line: python -m minigrpo {data,sft,train,doctor,eval,compare,ablate} [options] (see README.md).

Every field of minigrpo.config.Config is an option (--group_size 16 or --group-size 16), parsed by
transformers' HfArgumentParser: the preset, then a --config file (JSON or YAML, e.g. a run's
run_config.json), then the options given. Errors are one line and exit 2 (--debug: the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from transformers import HfArgumentParser
from transformers.hf_argparser import string_to_bool

from .config import FIELDS, PRESETS, Config, field_comments, make_config, read_config_file


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false)")


def config_options() -> argparse.ArgumentParser:
    """A parent parser of every Config field: its comment as help; only the options given are set."""
    parser = HfArgumentParser(Config, add_help=False)
    comments, defaults = field_comments(), Config()
    comments["preset"] = f"one of: {', '.join(PRESETS)} (cpu, or the --resume checkpoint's own config)"
    for action in parser._actions:
        if action.dest in FIELDS:
            action.help = f"{comments.get(action.dest, '')} (default {getattr(defaults, action.dest)!r})"
            action.default = argparse.SUPPRESS      # so that a preset or --config file is not overridden
            if action.type is string_to_bool:       # booleans read as the engine's errors say
                action.type = _bool
    parser.add_argument("--config", metavar="FILE", help="a JSON or YAML file of config fields "
                        "(a run's run_config.json); options given here override it")
    return parser


def _config(args) -> Config:
    """The preset, then the --config file, then the options given; `--resume DIR` alone takes DIR's config."""
    given = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    preset = given.pop("preset", None)
    base = read_config_file(args.config) if args.config else {}
    if getattr(args, "resume", None) and preset is None and not base:
        from .checkpoint import saved_config
        base = saved_config(args.resume) or {}
    preset = preset or base.pop("preset", None) or "cpu"
    base.pop("preset", None)
    return make_config(preset, **{**base, **given})


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like the engine's (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"error: {message}  (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m minigrpo", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    fields = config_options()

    p = sub.add_parser("data", help="generate the task data (deterministic JSONL splits)")
    p.add_argument("--out", default="data", help="output folder (default: data)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")

    p = sub.add_parser("sft", parents=[fields], help="SFT warm start only; saves OUT_DIR/sft")
    p.add_argument("--init", help="start from this checkpoint instead of a fresh model")

    p = sub.add_parser("train", parents=[fields], help="SFT warm start + GRPO; prints held-out accuracy before and after")
    p.add_argument("--init", help="start from this checkpoint (e.g. an SFT one) instead of a fresh model")
    p.add_argument("--resume", help="continue an interrupted GRPO run from its checkpoint folder (with its config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("doctor", parents=[fields], help="pre-flight check of a GRPO run (the same options as train): "
                       "truncation, signal, sampler mismatch, settings, one step's time and memory")
    p.add_argument("--init", help="check the policy in this checkpoint (default: the run's SFT checkpoint, if any)")
    p.add_argument("--prompts", type=int, default=16, help="prompts whose groups are sampled (default: 16)")

    from .course.compare import DEFAULTS, METHODS  # stdlib only at import: cheap
    p = sub.add_parser("compare", help="lesson 8: GRPO vs PPO vs REINFORCE vs RLOO from one SFT start")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/compare", help="summary.json and each run's metrics go here")
    for name, value in DEFAULTS.items():
        p.add_argument(f"--{name}", type=int, default=value, help=f"(default {value})")

    from .course.ablate import EXPERIMENTS, ROOT  # stdlib only at import: cheap
    p = sub.add_parser("ablate", help="lessons 9 and 11: one trick or setting at a time, from one SFT start")
    p.add_argument("--experiment", default="family", choices=EXPERIMENTS,
                   help="family (lesson 9, equations) or long (lesson 11, worked multiplication); default family")
    p.add_argument("--settings", nargs="+", default=None, metavar="SETTING",
                   help="; ".join(f"{k}: {' '.join(e.settings)}" for k, e in EXPERIMENTS.items())
                   + " (default: all the experiment's)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    each = lambda what: ", ".join(f"{what(e)} for {k}" for k, e in EXPERIMENTS.items())
    p.add_argument("--out", default=None, help="summary.json and each run's metrics go here "
                   f"(default: {each(lambda e: e.out)})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"GRPO steps per run (default: the experiment's: {each(lambda e: e.base['steps'])})")
    p.add_argument("--init", default=None, help="the SFT start (default: the experiment's: "
                   f"{each(lambda e: os.path.relpath(e.start, ROOT))})")

    p = sub.add_parser("eval", help="held-out accuracy (and style shares for equations) as JSON")
    p.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. runs/arithmetic/checkpoint)")
    p.add_argument("--data", required=True, help="a JSONL file of problems (e.g. data/arithmetic/test.jsonl)")
    p.add_argument("--max_new_tokens", type=int, default=None, help="completion limit (default: from the checkpoint)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line, unless --debug
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"error: {msg or type(e).__name__}  ({type(e).__name__}; --debug for the traceback)",
              file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "data":
        from .course.datasets import write_all
        print(json.dumps(write_all(args.out, seed=args.seed), indent=2))
        return 0
    if args.command == "eval":
        from .checkpoint import load_model, saved_config
        from .data import read_records
        from .evaluate import evaluate
        from .model import pick_device
        from .pipeline import prepare_model
        device = pick_device(args.device)
        model, tok = load_model(args.checkpoint, device)
        model = prepare_model(model, device)
        saved = saved_config(args.checkpoint) or {}
        limit = args.max_new_tokens or saved.get("max_new_tokens") or 48
        chat = bool(saved.get("chat_template", False))
        records = read_records(args.data, tok, limit, model.config.max_position_embeddings, chat=chat)
        records = [{"task": "text", **r} for r in records]   # free text, unless the records name their task
        print(json.dumps(evaluate(model, tok, records, max_new_tokens=limit, device=device, chat=chat), indent=2))
        return 0
    if args.command == "ablate":
        from .course.ablate import ablate, table
        summary = ablate(args.settings, args.seeds, args.out, init=args.init, steps=args.steps,
                         experiment=args.experiment)
        print(json.dumps(table(summary), indent=2))
        return 0
    if args.command == "compare":
        from .course.compare import DEFAULTS, compare, table
        summary = compare(args.methods, args.seeds, args.out, **{k: getattr(args, k) for k in DEFAULTS})
        print(json.dumps(table(summary), indent=2))
        return 0
    cfg = _config(args)
    from .pipeline import format_table, run_sft, run_train
    if args.command == "doctor":
        from .doctor import LEVELS, preflight, report
        which, findings = preflight(cfg, init=args.init, prompts=args.prompts)
        print(report(which, findings))
        return 1 if any(f.level == LEVELS[-1] for f in findings) else 0
    if args.command == "sft":
        _, _, before = run_sft(cfg, init=args.init)
        print(json.dumps({"sft": before, "checkpoint": f"{cfg.out_dir}/sft"}, indent=2))
        return 0
    from .distributed import stop
    try:
        results = run_train(cfg, init=args.init, resume=args.resume, progress=not args.no_progress)
    finally:
        stop()
    if results:   # under torchrun, rank 0 reports
        print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
