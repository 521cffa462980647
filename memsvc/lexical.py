"""Lexical search (BM25 via bm25s) and reciprocal-rank fusion: the keyword side of hybrid recall."""

import re
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

RRF_K = 60
_TOKEN_RE = re.compile(r"\b\w\w+\b")
_STOPWORDS = frozenset(STOPWORDS_EN)
# Snowball's English stemmer: "researching" finds "research", "painted" finds "painting".
_STEMMER = Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Stems of the lowercased words of two or more characters, English stopwords out (bm25s's own
    default rule)."""
    return list(_STEMMER.stemWords([w for w in _TOKEN_RE.findall(text.lower()) if w not in _STOPWORDS]))


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal-rank fusion of id rankings (rank 1 scores 1/(k+1)); ties keep first-seen order."""
    scores = rrf_scores(rankings, k)
    return sorted(scores, key=lambda i: -scores[i])


def rrf_scores(
    rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> dict[int, float]:
    """Each id's fused score: the sum over rankings of weight / (k + rank), in first-seen order."""
    scores: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, idx in enumerate(ranking, start=1):
            scores[idx] = scores.get(idx, 0.0) + weight / (k + rank)
    return scores


class Bm25:
    """A BM25 index over (id, text) pairs."""

    def __init__(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self._retriever: bm25s.BM25 | None = None
        if len(self.ids):  # bm25s cannot index an empty corpus (a user whose memory is not built yet)
            self._retriever = bm25s.BM25()
            self._retriever.index([tokenize(t) for t in texts], show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Best `k` ids with their scores; ids sharing no word with the query are left out."""
        tokens = tokenize(query)
        if not tokens or self._retriever is None:
            return []
        scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)
        if len(scores) > k:  # a partial sort: a full one over a million scores costs ~100 ms
            part = np.argpartition(-scores, k)[:k]
            top = part[np.argsort(-scores[part], kind="stable")]
        else:
            top = np.argsort(-scores, kind="stable")
        return [(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]
