"""Lexical search (BM25 via bm25s) and reciprocal-rank fusion: the keyword side of hybrid recall."""

import re
import threading
from collections.abc import Sequence

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

RRF_K = 60
_TOKEN_RE = re.compile(r"\b\w\w+\b")
_STOPWORDS = frozenset(STOPWORDS_EN)


def tokenize(text: str) -> list[str]:
    """Lowercased words of two or more characters, English stopwords out (bm25s's own default rule)."""
    return [w for w in _TOKEN_RE.findall(text.lower()) if w not in _STOPWORDS]


def rrf(rankings: Sequence[Sequence[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal-rank fusion of id rankings (rank 1 scores 1/(k+1)); ties keep first-seen order."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, idx in enumerate(ranking, start=1):
            scores[idx] = scores.get(idx, 0.0) + 1.0 / (k + rank)
    return sorted(scores, key=lambda i: -scores[i])


class Bm25:
    """A BM25 index over (id, text) pairs."""

    def __init__(self, ids: Sequence[int], texts: Sequence[str]) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self._retriever = bm25s.BM25()
        self._retriever.index([tokenize(t) for t in texts], show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Best `k` ids with their scores; ids sharing no word with the query are left out."""
        tokens = tokenize(query)
        if not tokens or len(self.ids) == 0:
            return []
        scores = np.asarray(self._retriever.get_scores(tokens), dtype=np.float64)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(int(self.ids[i]), float(scores[i])) for i in top if scores[i] > 0]


class Bm25Cache:
    """One BM25 index per user, rebuilt when the user's units change (told by a version tuple)."""

    def __init__(self, max_users: int = 256) -> None:
        self._cache: dict[int, tuple[object, Bm25]] = {}
        self._lock = threading.Lock()
        self.max_users = max_users

    def get(self, user_id: int, version: object) -> Bm25 | None:
        with self._lock:
            found = self._cache.get(user_id)
        return found[1] if found is not None and found[0] == version else None

    def put(self, user_id: int, version: object, index: Bm25) -> None:
        with self._lock:
            if len(self._cache) >= self.max_users and user_id not in self._cache:
                self._cache.pop(next(iter(self._cache)))  # oldest first: dicts keep insertion order
            self._cache[user_id] = (version, index)
