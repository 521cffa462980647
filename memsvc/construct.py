"""Memory construction: turns one ingest job's messages into embedded, indexed memory units."""

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from memsvc import store
from memsvc.db import transaction
from memsvc.embed import Embedder, content_hash
from memsvc.tables import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildReport:
    job_id: str
    messages: int
    units: int
    encoded: int  # texts that went through the model (the rest reused a stored vector)


def message_unit(msg: Message, user_id: int, model: str) -> store.NewUnit:
    text = f"{msg.speaker}: {msg.content}"
    return store.NewUnit(
        user_id=user_id,
        session_id=msg.session_id,
        kind="message",
        unit_key=f"m:{msg.id}",
        text=text,
        content_hash=content_hash(text),
        source_message_ids=[msg.external_id],
        occurred_at=msg.created_at,
        vector=None,
        embed_model=model,
    )


def embed_units(session: Session, embedder: Embedder, user_id: int, units: list[store.NewUnit]) -> int:
    """Fill in vectors, reusing any this user already has for the same text; returns texts encoded."""
    known = store.vectors_by_hash(session, user_id, embedder.model_name, [u.content_hash for u in units])
    missing: dict[str, str] = {}
    for unit in units:
        if unit.content_hash not in known:
            missing.setdefault(unit.content_hash, unit.text)
    if missing:
        vectors = embedder.encode(list(missing.values()))
        known.update({h: store.to_blob(v) for h, v in zip(missing, vectors, strict=True)})
    for unit in units:
        unit.vector = known[unit.content_hash]
        unit.embed_model = embedder.model_name
    return len(missing)


def build_job(factory: sessionmaker[Session], embedder: Embedder, job_id: str) -> BuildReport | None:
    """Build the memory of one ingest job. Idempotent: running it again inserts nothing new.

    Returns None when the job no longer exists (its user was erased meanwhile).
    """
    with transaction(factory) as session:
        job = store.get_job(session, job_id)
        if job is None:
            return None
        store.set_job_status(session, job_id, "running")
        messages = store.job_messages(session, job_id)
        user_id = job.user_id
    units = [message_unit(m, user_id, embedder.model_name) for m in messages]
    with transaction(factory) as session:
        encoded = embed_units(session, embedder, user_id, units)
    with transaction(factory) as session:
        if store.get_job(session, job_id) is None:
            return None
        store.insert_units(session, units)
        store.set_job_status(session, job_id, "done")
    report = BuildReport(job_id=job_id, messages=len(messages), units=len(units), encoded=encoded)
    log.info(
        "job %s built: %d messages -> %d units (%d encoded)",
        job_id,
        report.messages,
        report.units,
        report.encoded,
    )
    return report
