"""Captioning metrics of the MTL-AQA multitask models: BLEU-1..4 and ROUGE-L.

- BLEU-n: corpus-level BLEU with uniform weights over 1..n-grams and the brevity penalty of
  the closest reference length (Papineni et al. 2002), computed by NLTK's ``corpus_bleu``
  without smoothing (a corpus without any matching n-gram of some order scores ~0).
- ROUGE-L: the sentence-level LCS F-measure with beta = 1.2 averaged over the corpus, as the
  COCO caption toolkit (``pycocoevalcap/rouge``) computes it.

METEOR and CIDEr are not reported: METEOR needs Java or downloaded WordNet data, and no small
maintained package computes CIDEr offline. Inputs are token lists (the captions are already
tokenised; ``<sos>``/``<eos>`` removed).
"""

from __future__ import annotations

import warnings
from typing import Sequence

Tokens = Sequence[str]


def bleu(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens], max_n: int = 4) -> dict[str, float]:
    """``{'bleu_1': ..., 'bleu_n': ...}``: corpus BLEU of ``hypotheses`` against their lists of
    references (one list per hypothesis)."""
    from nltk.translate.bleu_score import corpus_bleu

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} reference lists for {len(hypotheses)} hypotheses")
    refs = [[list(r) for r in rs] for rs in references]
    hyps = [list(h) for h in hypotheses]
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns when some n-gram order has no match
        for n in range(1, max_n + 1):
            out[f"bleu_{n}"] = float(corpus_bleu(refs, hyps, weights=(1.0 / n,) * n)) if hyps else 0.0
    return out


def lcs_length(a: Tokens, b: Tokens) -> int:
    """Length of the longest common subsequence of two token lists."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(references: Sequence[Sequence[Tokens]], hypotheses: Sequence[Tokens], beta: float = 1.2) -> float:
    """Mean over hypotheses of ``(1 + b^2) P R / (R + b^2 P)`` with ``P``, ``R`` the best LCS
    precision and recall over its references (COCO's Rouge)."""
    scores = []
    for refs, hyp in zip(references, hypotheses):
        if not hyp or not refs:
            scores.append(0.0)
            continue
        lcs = [lcs_length(r, hyp) for r in refs]
        p = max(l / len(hyp) for l in lcs)
        r = max(l / len(ref) if ref else 0.0 for l, ref in zip(lcs, refs))
        scores.append((1 + beta**2) * p * r / (r + beta**2 * p) if p > 0 and r > 0 else 0.0)
    return float(sum(scores) / len(scores)) if scores else 0.0


def caption_report(references: Sequence[Tokens], hypotheses: Sequence[Tokens]) -> dict[str, float]:
    """BLEU-1..4 and ROUGE-L of one hypothesis per sample against its single reference."""
    refs = [[r] for r in references]
    return {**bleu(refs, hypotheses), "rouge_l": rouge_l(refs, hypotheses)}
