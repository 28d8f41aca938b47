"""I3D backbone config: ``--config configs/i3d.py:variant=pecop,adapters=all``.

Args:
  variant: deepmind | pecop | piergiaj (numerics, see aqa_jax/models/i3d.py).
  adapters: all | none | a list joined by '+', e.g. Mixed_5b+Mixed_5c.
  reduction: adapter bottleneck ratio (PECoP: 4).
  zero_init: start adapters as the identity.
"""

import ml_collections

from . import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = common.parse_arg(arg, variant="deepmind", adapters="all", reduction=4, zero_init=False)
    if args.adapters == "all":
        blocks = common.MIXED_BLOCKS
    elif args.adapters == "none":
        blocks = ()
    else:
        blocks = tuple(args.adapters.split("+"))
    config = ml_collections.ConfigDict()
    config.model = dict(
        variant=args.variant,
        adapter_blocks=blocks,
        adapter_reduction=args.reduction,
        adapter_zero_init=args.zero_init,
        num_classes=400,
    )
    # The Kinetics-400 weights load into every variant (BN gamma = 1 where it has one).
    config.weights = "kinetics400"
    return config
