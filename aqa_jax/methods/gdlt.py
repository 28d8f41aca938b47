"""GDLT: Likert Scoring with Grade Decoupling (Xu, Zeng, Zheng, CVPR 2022; xuangch/CVPR22_GDLT).

The network of :mod:`aqa_jax.methods.cofinal` without its two additions: no simplex-ETF
sub-grade head and no revert branch. Input projection, post-norm Transformer encoder (1 layer)
and decoder (2 layers) with 4 learnable grade queries, then the Likert read-out
``ŷ = Σ w_i p_i`` with ``w = linspace(0, 1, 4)`` and ``p = σ(s) / Σ σ(s)``. Loss
``MSE(ŷ, y) + α · L_tri`` on the unsplit ``y = score / 25`` (no grade decoupling), the
hardest triplet loss over the B x 4 query embeddings labelled by query index (``models/loss.py``
of GDLT: ``arange(n).repeat(b)``; cosine distance as in its ``triplet_loss.py``).

Options live in ``config.gdlt`` (the fields of ``config.cofinal``); ``use_etf``, ``revert`` and
``weight_preset`` are fixed by this method and a config that sets them otherwise is an error.
"""

from __future__ import annotations

from aqa_jax.methods import cofinal


class Method(cofinal.Method):
    """CoFInAl's network and loss with GDLT's flags (see module docstring)."""

    section = "gdlt"
    fixed = dict(use_etf=False, revert=False, weight_preset=0)
