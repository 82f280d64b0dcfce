"""Similarity of a reply to the reference: chrF (sacrebleu's), on a 0..1 scale.

chrF compares character n-grams, so it rewards the right facts and phrasing even when
the words are inflected or reordered; it is robust on short replies where BLEU is 0.
"""

from __future__ import annotations


def chrf(reply: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return float(CHRF().sentence_score(reply, [reference]).score) / 100.0
