"""Search: keeping the index in step with Postgres, candidates, and token-budget packing."""

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, TypeVar

import numpy as np
from sqlalchemy.orm import Session

from memsvc import store
from memsvc.embed import Embedder
from memsvc.graph import MemoryGraph
from memsvc.index import VectorIndex
from memsvc.lexical import Bm25, rrf_scores
from memsvc.store import Candidate
from memsvc.temporal import Period, query_periods
from memsvc.tokens import count_tokens

log = logging.getLogger(__name__)

# --- index maintenance ------------------------------------------------------------------------


def refresh_index(session: Session, index: VectorIndex) -> int:
    """Apply every change committed since the index's sequence number; returns how many."""
    # Connection first, lock second, as every caller's order: a thread holding the lock while it
    # waited for a pooled connection deadlocked with request threads holding connections while they
    # waited for the lock (30 s stalls and 500s under load, until the pool's timeout broke it).
    session.connection()
    with index.refresh_lock:
        return _apply_changes(session, index)


def _apply_changes(session: Session, index: VectorIndex) -> int:
    applied = 0
    while True:
        changes = store.changes_since(session, index.seq)
        if not changes:
            return applied
        added = [c.unit_id for c in changes if c.op == "add" and c.unit_id is not None]
        vectors = store.unit_vectors(session, added, index.model)
        for change in changes:
            index.user_seq[change.user_id] = change.seq
            if change.op == "add" and change.unit_id in vectors:
                user_id, blob = vectors[change.unit_id]
                index.add(user_id, np.array([change.unit_id]), store.from_blob(blob).reshape(1, -1))
            elif change.op == "remove" and change.unit_id is not None:
                index.remove(change.user_id, [change.unit_id])
            elif change.op == "drop_user":
                index.drop_user(change.user_id)
        index.seq = changes[-1].seq
        applied += len(changes)


def rebuild_index(session: Session, index: VectorIndex) -> None:
    """Rebuild the whole index from Postgres (the source of truth), beside the live one, and swap
    it in: searches meanwhile use the old index (the caller holds the refresh lock, so no change
    is applied to the old one that the new one would miss)."""
    fresh = VectorIndex(index.model, index.dim, None, index.approx_threshold)
    _fill(session, fresh)
    index.replace_with(fresh)
    log.info("index rebuilt from Postgres: %d vectors, seq %d", index.count(), index.seq)


def _fill(session: Session, index: VectorIndex) -> None:
    seq = store.last_change_seq(session)
    batch_ids: dict[int, list[int]] = {}
    batch_vecs: dict[int, list[np.ndarray]] = {}
    for unit_id, user_id, blob in store.iter_all_vectors(session, index.model):
        batch_ids.setdefault(user_id, []).append(unit_id)
        batch_vecs.setdefault(user_id, []).append(store.from_blob(blob))
    for user_id, ids in batch_ids.items():
        index.add(user_id, np.array(ids, dtype=np.int64), np.vstack(batch_vecs[user_id]))
    index.seq = seq
    index.user_seq = dict.fromkeys(batch_ids, seq)


def open_index(session: Session, index: VectorIndex) -> None:
    """Load the persisted index, catch up with Postgres, and rebuild if it disagrees.

    Runs inside one REPEATABLE READ transaction so the counts checked are those of the same
    snapshot the changes were read from.
    """
    loaded = index.load()
    if loaded and index.seq > store.last_change_seq(session):
        log.warning("index files are ahead of the database (a different or restored database): rebuilding")
        loaded = False
    if not loaded:
        index.clear()  # nothing searches yet: free what was loaded before building the new one
        rebuild_index(session, index)
        return
    refresh_index(session, index)
    expected = store.vector_counts(session, index.model)
    if expected != index.counts():
        log.warning("index counts differ from Postgres after catch-up: rebuilding")
        index.clear()
        rebuild_index(session, index)


# --- search -----------------------------------------------------------------------------------


# How far feedback can move a hit: at most +-20% of its fused score, saturating after a few votes.
SALIENCE_WEIGHT = 0.2
SALIENCE_BOUND = 5.0

# A hit is cited by its first three source messages (the contract's scoring credits no more), so
# only those count as covered when deciding whether a later hit brings something new.
CITED_SOURCES = 3


@dataclass(frozen=True)
class Hit:
    unit: Candidate
    score: float
    tokens: int


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    context: str
    context_tokens: int


@dataclass(frozen=True)
class RecallOptions:
    """What search uses; each part can be switched off to measure what it adds."""

    kinds: frozenset[str] = frozenset({"edu", "note", "episode"})
    lexical: bool = True  # BM25 beside dense, fused by reciprocal rank
    graph: bool = True  # deep mode: associative recall over the memory graph
    depth: int = 100  # candidates taken from each channel
    graph_seeds: int = 10  # best fused candidates that seed the graph walk
    graph_weight: float = 0.25  # the graph's ranking counts this much against each index's
    # What the walk may bring in: episodes are near every EDU of theirs, so a walk finds them first,
    # but they are long and cite no more than three messages.
    graph_kinds: frozenset[str] = frozenset({"edu", "note"})
    spread_sources: bool = True  # packing: hits citing only already-cited messages go last
    # A query that names a time ("in July 2023", "last summer" asked on a given day) lifts memory
    # of what happened then by this factor: a preference, not a filter, as dates can be off.
    time_boost: float = 0.5


T = TypeVar("T")


class PerUserCache(Generic[T]):
    """Derived per-user structures (BM25 index, graph), rebuilt when the user's units change."""

    def __init__(self, build: Callable[[Session, int, frozenset[str]], T], max_users: int = 128) -> None:
        self._build = build
        self._cache: dict[tuple[int, frozenset[str]], tuple[int, T]] = {}
        self._lock = threading.Lock()
        self.max_users = max_users

    def get(self, session: Session, index: VectorIndex, user_id: int, kinds: frozenset[str]) -> T:
        version = index.user_seq.get(user_id, 0)
        key = (user_id, kinds)
        with self._lock:
            found = self._cache.get(key)
        if found is not None and found[0] == version:
            return found[1]
        value = self._build(session, user_id, kinds)
        with self._lock:
            if len(self._cache) >= self.max_users and key not in self._cache:
                self._cache.pop(next(iter(self._cache)))  # the oldest: dicts keep insertion order
            self._cache[key] = (version, value)
        return value


def _build_bm25(session: Session, user_id: int, kinds: frozenset[str]) -> Bm25:
    pairs = store.unit_texts(session, user_id, sorted(kinds))
    return Bm25([uid for uid, _ in pairs], [text for _, text in pairs])


def _build_graph(session: Session, user_id: int, kinds: frozenset[str]) -> MemoryGraph:
    names = dict(store.unit_texts(session, user_id, ["entity"]))
    return MemoryGraph(store.unit_kinds(session, user_id), names, store.user_links(session, user_id))


lexical_indexes: PerUserCache[Bm25] = PerUserCache(_build_bm25)
graphs: PerUserCache[MemoryGraph] = PerUserCache(_build_graph)


def search(
    session: Session,
    index: VectorIndex,
    embedder: Embedder,
    user_id: int,
    query: str,
    *,
    limit: int,
    max_tokens: int,
    mode: str,
    as_of: datetime | None = None,
    occurred: tuple[datetime | None, datetime | None] = (None, None),
    asked_on: date | None = None,
    options: RecallOptions = RecallOptions(),
) -> SearchResult:
    refresh_index(session, index)
    query, periods = query_periods(query, asked_on)
    query_vector = embedder.encode([query])[0]
    dense = index.search(user_id, query_vector, k=options.depth * 2)
    rankings = [[uid for uid, _ in dense]]
    if options.lexical:
        lexical = lexical_indexes.get(session, index, user_id, options.kinds)
        rankings.append([uid for uid, _ in lexical.search(query, options.depth)])
    units = store.units_by_ids(session, user_id, list({uid for r in rankings for uid in r}))

    def usable(uid: int) -> bool:
        unit = units.get(uid)
        return (
            unit is not None
            and unit.kind in options.kinds
            and _valid_at(unit, as_of)
            and _in_range(unit, *occurred)
        )

    rankings = [[uid for uid in r if usable(uid)][: options.depth] for r in rankings]
    scores = rrf_scores(rankings)
    if mode == "deep" and options.graph:
        associated = associate(session, index, user_id, scores, query, options)
        units.update(store.units_by_ids(session, user_id, [u for u in associated if u not in units]))
        associated = [uid for uid in associated if usable(uid)]
        scores = rrf_scores([*rankings, associated], weights=[1.0] * len(rankings) + [options.graph_weight])
    if periods and options.time_boost:
        scores = {
            uid: s * (1 + options.time_boost * _in_periods(units[uid], periods)) for uid, s in scores.items()
        }
    # Feedback (RMM): units agents used rank a little higher, ones they passed over a little lower.
    scores = {uid: s * (1 + SALIENCE_WEIGHT * math.tanh(units[uid].salience)) for uid, s in scores.items()}
    ranked = sorted(scores, key=lambda uid: -scores[uid])
    candidates = [Hit(units[uid], scores[uid], count_tokens(units[uid].text)) for uid in ranked]
    hits = pack(candidates, max_tokens=max_tokens, limit=limit, spread_sources=options.spread_sources)
    context = render_context(hits)
    return SearchResult(hits=hits, context=context, context_tokens=count_tokens(context) if hits else 0)


def associate(
    session: Session,
    index: VectorIndex,
    user_id: int,
    scores: dict[int, float],
    query: str,
    options: RecallOptions,
) -> list[int]:
    """Deep mode's associative step: personalized PageRank over the user's memory graph, seeded
    from the best candidates and the entities the query names; returns what it reaches, best
    first, that the index look-ups did not already rank near the top."""
    graph = graphs.get(session, index, user_id, frozenset())
    top = sorted(scores, key=lambda uid: -scores[uid])[: options.graph_seeds]
    seeds = {uid: scores[uid] for uid in top}
    named = graph.query_entities(query)
    for entity in named:
        seeds[entity] = max(seeds.values(), default=1.0)
    found = graph.associate(seeds, options.kinds & options.graph_kinds, k=options.depth)
    return [uid for uid, _ in found]


def record_feedback(session: Session, user_id: int, used: list[int], unused: list[int]) -> int:
    """RMM's reward: +1 for a hit the agent used, -1 for one it did not."""
    deltas: dict[int, float] = {}
    for uid in used:
        deltas[uid] = deltas.get(uid, 0.0) + 1.0
    for uid in unused:
        deltas[uid] = deltas.get(uid, 0.0) - 1.0
    return store.add_salience(session, user_id, deltas, SALIENCE_BOUND)


def _valid_at(unit: Candidate, as_of: datetime | None) -> bool:
    if as_of is None:
        return unit.valid_to is None
    if unit.valid_from is not None and unit.valid_from > as_of:
        return False
    if unit.occurred_at is not None and unit.kind != "note" and unit.occurred_at > as_of:
        return False
    return unit.valid_to is None or unit.valid_to > as_of


def _in_periods(unit: Candidate, periods: list[Period]) -> bool:
    day = unit.occurred_at.date() if unit.occurred_at else None
    return day is not None and any(p.start <= day < p.until for p in periods)


def _in_range(unit: Candidate, after: datetime | None, before: datetime | None) -> bool:
    """Whether the unit's event falls in [after, before); a unit with no date never does."""
    if after is None and before is None:
        return True
    if unit.occurred_at is None:
        return False
    return (after is None or unit.occurred_at >= after) and (before is None or unit.occurred_at < before)


def pack(ranked: list[Hit], *, max_tokens: int, limit: int, spread_sources: bool = True) -> list[Hit]:
    """Hits in rank order whose texts together fit in `max_tokens` (at most `limit` of them).

    A hit too long for what is left is skipped, not the end: a shorter one further down may fit.
    A hit whose sources are all cited by better hits already (a second EDU of the same message, a
    note beside the EDU it came from) adds least: it waits until every new source had its turn.
    """
    fresh: list[Hit] = []
    repeats: list[Hit] = []
    cited: set[str] = set()
    for hit in ranked:
        sources = set(hit.unit.source_message_ids[:CITED_SOURCES])
        (repeats if spread_sources and sources and sources <= cited else fresh).append(hit)
        cited |= sources
    packed: list[Hit] = []
    used = 0
    for hit in fresh + repeats:
        if len(packed) >= limit:
            break
        if used + hit.tokens > max_tokens:
            continue
        packed.append(hit)
        used += hit.tokens
    order = {id(h): i for i, h in enumerate(ranked)}
    return sorted(packed, key=lambda h: order[id(h)])


def render_context(hits: list[Hit]) -> str:
    """One prompt-ready block: each hit on its own line with its citation."""
    lines = []
    for hit in hits:
        cite = ", ".join(hit.unit.source_message_ids[:CITED_SOURCES])
        lines.append(f"- {hit.unit.text} [{cite}]" if cite else f"- {hit.unit.text}")
    return "\n".join(lines)
