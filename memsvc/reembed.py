"""Re-embedding a tenant's memory with another model, in small committed batches (resumable).

A unit counts as done once its `embed_model` is the target: a run that is killed and started again
walks only what is left. Each batch updates vectors and publishes `remove` + `add` for the indexed
units in one transaction, so every API process drops the old vector (an index of the old model
ignores the `add`: the unit no longer has a vector of its model) and an index of the target model
takes the new one (VectorIndex.add replaces by id, so a unit is never in it twice).
"""

import logging
from collections.abc import Sequence

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from memsvc import store
from memsvc.construct import vectors_for
from memsvc.db import transaction
from memsvc.embed import Embedder
from memsvc.tables import EndUser, MemoryUnit

log = logging.getLogger(__name__)

BATCH_SIZE = 256


def _of_tenant(tenant_id: int) -> ColumnElement[bool]:
    return MemoryUnit.user_id.in_(select(EndUser.id).where(EndUser.tenant_id == tenant_id))


def progress(session: Session, tenant_id: int, model: str) -> tuple[int, int]:
    """(units with a vector of `model`, units with a vector of another model) of the tenant."""
    is_target = MemoryUnit.embed_model.is_not_distinct_from(model)
    done, remaining = session.execute(
        select(
            func.count().filter(is_target),
            func.count().filter(~is_target),
        ).where(_of_tenant(tenant_id), MemoryUnit.vector.is_not(None))
    ).one()
    return int(done), int(remaining)


def reembed_batch(session: Session, embedder: Embedder, tenant_id: int, after_id: int, limit: int) -> int:
    """Re-embed the next `limit` units (id order, after `after_id`) of the tenant not yet of the
    embedder's model. Returns the last unit id looked at, or 0 when nothing is left."""
    model = embedder.model_name
    rows = session.execute(
        select(MemoryUnit.id, MemoryUnit.user_id, MemoryUnit.kind, MemoryUnit.text, MemoryUnit.content_hash)
        .where(
            _of_tenant(tenant_id),
            MemoryUnit.id > after_id,
            MemoryUnit.vector.is_not(None),
            MemoryUnit.embed_model.is_distinct_from(model),
        )
        .order_by(MemoryUnit.id)
        .limit(limit)
    ).all()
    if not rows:
        return 0
    by_user: dict[int, list[tuple[int, str, str, str]]] = {}
    for unit_id, user_id, kind, text, digest in rows:
        by_user.setdefault(user_id, []).append((unit_id, kind, text, digest))
    changed: dict[int, list[int]] = {}
    for user_id, units in by_user.items():
        vectors, _ = vectors_for(session, embedder, user_id, {digest: text for _, _, text, digest in units})
        params = [{"b_id": uid, "b_hash": digest, "b_vector": vectors[digest]} for uid, _, _, digest in units]
        # The hash guard skips a unit whose text changed since it was read (a later run redoes it).
        # Through the connection: the ORM would take a parameter list as an update by primary key.
        session.connection().execute(
            update(MemoryUnit)
            .where(MemoryUnit.id == bindparam("b_id"), MemoryUnit.content_hash == bindparam("b_hash"))
            .values(vector=bindparam("b_vector"), embed_model=model),
            params,
        )
        changed[user_id] = [uid for uid, kind, _, _ in units if kind in store.INDEXED_KINDS]
    # Last in the transaction: publish_changes holds the change-log lock until commit.
    for user_id, ids in changed.items():
        updated = _of_model(session, ids, model)
        store.publish_changes(session, user_id, "remove", updated)
        store.publish_changes(session, user_id, "add", updated)
    return int(rows[-1][0])


def _of_model(session: Session, ids: Sequence[int], model: str) -> list[int]:
    if not ids:
        return []
    query = select(MemoryUnit.id).where(MemoryUnit.id.in_(list(ids)), MemoryUnit.embed_model == model)
    return list(session.scalars(query.order_by(MemoryUnit.id)))


def run(factory: sessionmaker[Session], embedder: Embedder, tenant_id: int, batch_size: int) -> int:
    """Re-embed every unit of the tenant not yet of the embedder's model, one transaction a batch;
    returns how many batches it committed."""
    after, batches = 0, 0
    while True:
        with transaction(factory) as session:
            after = reembed_batch(session, embedder, tenant_id, after, batch_size)
        if after == 0:
            return batches
        batches += 1
        log.info(
            "re-embed tenant %d to %s: batch %d done (up to unit %d)",
            tenant_id,
            embedder.model_name,
            batches,
            after,
        )
