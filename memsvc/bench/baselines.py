"""Turn-level baselines (BM25, dense, their RRF) over the same turns memsvc ingests, as hit rankings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bm25s
import numpy as np

from memsvc.bench.locomo import Conversation
from memsvc.bench.score import Hit
from memsvc.embed import Embedder
from memsvc.lexical import rrf, tokenize


@dataclass(frozen=True)
class TurnRankings:
    """Per question of one conversation, the unit indices each baseline ranks, best first."""

    bm25: list[list[int]]
    dense: list[list[int]]
    hybrid: list[list[int]]


def rank_conversation(conv: Conversation, embedder: Embedder) -> TurnRankings:
    turns = conv.turns
    texts = [t.unit_text for t in turns]
    queries = [q.question for q in conv.questions]

    retriever = bm25s.BM25()
    retriever.index([tokenize(t) for t in texts], show_progress=False)
    bm25: list[list[int]] = []
    for q in queries:
        scores = np.asarray(retriever.get_scores(tokenize(q)), dtype=np.float64)
        # Turns sharing no query word score 0 and are left out: in index order they would pad the
        # budget with the conversation's opening turns, a free bonus no real keyword search gives.
        order = np.argsort(-scores, kind="stable")
        bm25.append([int(i) for i in order if scores[i] > 0])

    unit_vecs = embedder.encode(texts)
    query_vecs = embedder.encode(queries)
    sims = query_vecs @ unit_vecs.T  # vectors are L2-normalized: the dot product is the cosine
    dense = [[int(i) for i in np.argsort(-row, kind="stable")] for row in sims]

    hybrid = [rrf([b, d]) for b, d in zip(bm25, dense, strict=True)]
    return TurnRankings(bm25, dense, hybrid)


def as_hits(conv: Conversation, ranking: Sequence[int]) -> list[Hit]:
    """A ranking of turns as the hits a search would return: the unit text, its dia_id as the source."""
    turns = conv.turns
    return [Hit(turns[i].unit_text, (turns[i].dia_id,)) for i in ranking]
