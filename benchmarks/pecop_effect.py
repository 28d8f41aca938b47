"""PECoP's effect, measured: the paper's ablation (Dom-G, HPT+BN, Dom-S, PECoP) over seeds.

    python benchmarks/pecop_effect.py                          # the full run of docs/PECOP_EFFECT.md
    python benchmarks/pecop_effect.py --quick --out /tmp/pe    # the reduced run of the slow test

The method, step by step, is the docstring of :mod:`aqa_jax.pecop_effect`. Writes
``results.json``, ``table.md`` and ``pecop_effect.png`` to ``--out`` (default
``docs/pecop_effect``) after every seed, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aqa_jax.pecop_effect import QUICK, Setup, run

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the reduced run (1 seed, 16 subjects a split)")
    parser.add_argument("--out", default=str(REPO / "docs" / "pecop_effect"), help="output directory")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default 0 1 2; --quick: 0)")
    parser.add_argument("--pretrain-steps", type=int)
    parser.add_argument("--ft-steps", type=int)
    args = parser.parse_args()
    setup = Setup(**(QUICK if args.quick else {}))
    if args.seeds:
        setup.seeds = tuple(args.seeds)
    if args.pretrain_steps:
        setup.pretrain_steps = args.pretrain_steps
    if args.ft_steps:
        setup.ft_steps = args.ft_steps
    run(setup, Path(args.out))


if __name__ == "__main__":
    main()
