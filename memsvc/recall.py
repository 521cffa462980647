"""Search: keeping the index in step with Postgres, candidates, and token-budget packing."""

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy.orm import Session

from memsvc import store
from memsvc.embed import Embedder
from memsvc.index import VectorIndex
from memsvc.tables import MemoryUnit
from memsvc.tokens import count_tokens

log = logging.getLogger(__name__)

# Kinds that are answers; entity units are graph nodes, not hits.
HIT_KINDS = frozenset({"message", "edu", "note", "episode"})


# --- index maintenance ------------------------------------------------------------------------


def refresh_index(session: Session, index: VectorIndex) -> int:
    """Apply every change committed since the index's sequence number; returns how many."""
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
    """Rebuild the whole index from Postgres (the source of truth)."""
    index.clear()
    seq = store.last_change_seq(session)
    batch_ids: dict[int, list[int]] = {}
    batch_vecs: dict[int, list[np.ndarray]] = {}
    for unit_id, user_id, blob in store.iter_all_vectors(session, index.model):
        batch_ids.setdefault(user_id, []).append(unit_id)
        batch_vecs.setdefault(user_id, []).append(store.from_blob(blob))
    for user_id, ids in batch_ids.items():
        index.add(user_id, np.array(ids, dtype=np.int64), np.vstack(batch_vecs[user_id]))
    index.seq = seq
    log.info("index rebuilt from Postgres: %d vectors, seq %d", index.count(), seq)


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
        rebuild_index(session, index)
        return
    refresh_index(session, index)
    expected = store.vector_counts(session, index.model)
    if expected != index.counts():
        log.warning("index counts differ from Postgres after catch-up: rebuilding")
        rebuild_index(session, index)


# --- search -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    unit: MemoryUnit
    score: float
    session_external_id: str | None
    tokens: int


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    context: str
    context_tokens: int


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
) -> SearchResult:
    refresh_index(session, index)
    query_vector = embedder.encode([query])[0]
    candidates = index.search(user_id, query_vector, k=max(limit * 4, 50))
    units = store.units_by_ids(session, user_id, [uid for uid, _ in candidates])
    ranked = [
        (units[uid], score)
        for uid, score in candidates
        if uid in units and units[uid].kind in HIT_KINDS and _valid_at(units[uid], as_of)
    ]
    sessions = store.session_external_ids(session, [u.session_id for u, _ in ranked if u.session_id])
    hits = pack(
        [
            Hit(u, score, sessions.get(u.session_id) if u.session_id else None, count_tokens(u.text))
            for u, score in ranked
        ],
        max_tokens=max_tokens,
        limit=limit,
    )
    context = render_context(hits)
    return SearchResult(hits=hits, context=context, context_tokens=count_tokens(context) if hits else 0)


def _valid_at(unit: MemoryUnit, as_of: datetime | None) -> bool:
    if as_of is None:
        return unit.valid_to is None
    if unit.valid_from is not None and unit.valid_from > as_of:
        return False
    if unit.occurred_at is not None and unit.kind != "note" and unit.occurred_at > as_of:
        return False
    return unit.valid_to is None or unit.valid_to > as_of


def pack(ranked: list[Hit], *, max_tokens: int, limit: int) -> list[Hit]:
    """Hits in rank order whose texts together fit in `max_tokens` (at most `limit` of them).

    A hit too long for what is left is skipped, not the end: a shorter one further down may fit.
    """
    packed: list[Hit] = []
    used = 0
    for hit in ranked:
        if len(packed) >= limit:
            break
        if used + hit.tokens > max_tokens:
            continue
        packed.append(hit)
        used += hit.tokens
    return packed


def render_context(hits: list[Hit]) -> str:
    """One prompt-ready block: each hit on its own line with its citation."""
    lines = []
    for hit in hits:
        cite = ", ".join(hit.unit.source_message_ids[:3])
        lines.append(f"- {hit.unit.text} [{cite}]" if cite else f"- {hit.unit.text}")
    return "\n".join(lines)
