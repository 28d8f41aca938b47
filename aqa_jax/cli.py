"""The ``aqa-jax`` command."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _convert_weights(args: argparse.Namespace) -> int:
    from aqa_jax.weights.store import save_model_weights
    from aqa_jax.weights.torch_convert import convert_torch_i3d, read_torch_checkpoint

    state = read_torch_checkpoint(args.src)
    model, variables, converted = convert_torch_i3d(state, args.layout, variant=args.variant)
    out = save_model_weights(
        args.dst,
        model,
        variables,
        heads=converted.heads,
        provenance={"source": str(args.src), "layout": converted.layout},
    )
    n = sum(v.size for v in converted.weights.values())
    print(
        f"converted {args.src} ({converted.layout} layout, {len(state)} keys, {n:,} values) → "
        f"{out}\n  variant={model.variant} adapters={list(model.adapter_blocks) or 'none'} "
        f"heads={sorted(converted.heads) or 'none'} ignored={len(converted.ignored)} BN counters"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from aqa_jax.config_args import load_config
    from aqa_jax.demo import run_demo

    config = load_config(args.config) if args.config else None
    run_demo(config.model.to_dict() if config else None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aqa-jax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the Kinetics-400 I3D + adapters demo")
    demo.add_argument("--config", default=None,
                      help="model config, e.g. configs/i3d.py:variant=pecop,adapters=all")
    demo.set_defaults(func=_demo)
    conv = sub.add_parser(
        "convert-weights",
        help="convert a PyTorch I3D checkpoint (piergiaj, hassony2, PECoP) to an orbax checkpoint",
    )
    conv.add_argument("src", help="the .pt / .pth / .pth.tar file")
    conv.add_argument("dst", help="output directory")
    conv.add_argument("--layout", choices=("piergiaj", "hassony2", "pecop"), default=None,
                      help="source layout (detected from key names by default)")
    conv.add_argument("--variant", choices=("deepmind", "pecop", "piergiaj"), default=None,
                      help="target numerics (default: the layout's own family)")
    conv.set_defaults(func=_convert_weights)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"aqa-jax {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
