"""Command line: python -m minigrpo {data,sft,train,eval} [options].

    python -m minigrpo data                       # write data/<task>/{sft,train,test}.jsonl
    python -m minigrpo sft   --preset cpu         # SFT warm start only -> runs/arithmetic/sft
    python -m minigrpo train --preset cpu         # SFT + GRPO, prints accuracy before/after
    python -m minigrpo train --resume runs/arithmetic/checkpoint
    python -m minigrpo eval  --checkpoint runs/arithmetic/checkpoint --data data/arithmetic/test.jsonl
    python -m minigrpo compare                    # lesson 8: GRPO vs PPO vs REINFORCE vs RLOO, 3 seeds

Every field of minigrpo.config.Config is also an option (--steps 100, --lr 3e-4 ...).
Errors print one line and exit with status 2 (add --debug for the traceback).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .config import PRESETS, Config, make_config


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help=f"one of: {', '.join(PRESETS)} (default: cpu, or the --resume checkpoint's own config)")
    g = p.add_argument_group("config fields (override the preset; see minigrpo/config.py)")
    for f in dataclasses.fields(Config):
        if f.name == "preset":
            continue
        kind = {"int": int, "float": float, "str": str, "bool": _bool}[str(f.type)]  # annotations are strings
        g.add_argument(f"--{f.name}", type=kind, default=None, metavar=str(f.type).upper(),
                       help=f"(default {f.default!r})")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (use true/false)")


def _config(args) -> Config:
    """The preset plus the options given; `--resume DIR` alone continues with DIR's own config."""
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if f.name != "preset" and getattr(args, f.name, None) is not None}
    if getattr(args, "resume", None) and args.preset is None:
        from .checkpoint import saved_config
        saved = saved_config(args.resume)
        if saved:
            return make_config(saved.pop("preset"), **{**saved, **overrides})
    return make_config(args.preset or "cpu", **overrides)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like the engine's (the usage is in --help)."""

    def error(self, message):
        self.exit(2, f"error: {message}  (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m minigrpo", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="generate the task data (deterministic JSONL splits)")
    p.add_argument("--out", default="data", help="output folder (default: data)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")

    p = sub.add_parser("sft", help="SFT warm start only; saves OUT_DIR/sft")
    p.add_argument("--init", help="start from this checkpoint instead of a fresh model")
    _add_config_options(p)

    p = sub.add_parser("train", help="SFT warm start + GRPO; prints held-out accuracy before and after")
    p.add_argument("--init", help="start from this checkpoint (e.g. an SFT one) instead of a fresh model")
    p.add_argument("--resume", help="continue an interrupted GRPO run from its checkpoint folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_config_options(p)

    from .compare import DEFAULTS, METHODS  # stdlib only at import: cheap
    p = sub.add_parser("compare", help="lesson 8: GRPO vs PPO vs REINFORCE vs RLOO from one SFT start")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", default="runs/compare", help="summary.json and each run's metrics go here")
    for name, value in DEFAULTS.items():
        p.add_argument(f"--{name}", type=int, default=value, help=f"(default {value})")

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
        from .data import write_all
        counts = write_all(args.out, seed=args.seed)
        print(json.dumps(counts, indent=2))
        return 0
    if args.command == "eval":
        from .checkpoint import load_checkpoint
        from .data import read_jsonl
        from .evaluate import evaluate
        from .model import pick_device
        from .pipeline import prepare_model, record_check
        device = pick_device(args.device)
        model, tok, state = load_checkpoint(args.checkpoint, device)
        model = prepare_model(model, device)
        limit = args.max_new_tokens or (state.get("config") or {}).get("max_new_tokens") or 48
        records = read_jsonl(args.data, check=record_check(tok, limit, model.config.max_position_embeddings))
        result = evaluate(model, tok, records, max_new_tokens=limit, device=device)
        print(json.dumps(result, indent=2))
        return 0
    if args.command == "compare":
        from .compare import compare, table
        from .compare import DEFAULTS
        settings = {k: getattr(args, k) for k in DEFAULTS}
        summary = compare(args.methods, args.seeds, args.out, **settings)
        print(json.dumps(table(summary), indent=2))
        return 0
    cfg = _config(args)
    from .pipeline import format_table, run_sft, run_train
    if args.command == "sft":
        _, _, before = run_sft(cfg, init=args.init)
        print(json.dumps({"sft": before, "checkpoint": f"{cfg.out_dir}/sft"}, indent=2))
        return 0
    results = run_train(cfg, init=args.init, resume=args.resume, progress=not args.no_progress)
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
