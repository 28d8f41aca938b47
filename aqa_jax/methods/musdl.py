"""MUSDL: multi-path USDL, one score distribution per judge (Tang et al., CVPR 2020).

The network, targets and loss are :mod:`aqa_jax.methods.usdl`'s with ``usdl.judge_key`` set:
one MLP per judge on the shared pooled feature, the KL summed over judges, and the judges'
argmax predictions combined by ``usdl.combine`` (``diving``: middle three of seven x
difficulty, MTL-AQA; ``sum``: the six GRS items of JIGSAWS).
"""

from __future__ import annotations

from aqa_jax.methods import usdl


class Method(usdl.Method):
    """USDL with one head per judge (see module docstring)."""

    def __init__(self, config):
        if not config.usdl.get("judge_key"):
            raise ValueError("musdl needs config.usdl.judge_key (the per-judge score field, e.g. "
                             "judge_scores for MTL-AQA, grs for JIGSAWS) and usdl.num_judges")
        super().__init__(config)
