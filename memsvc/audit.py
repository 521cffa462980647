"""The audit log: a record of every admin action and every erasure, readable by the admin."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from memsvc.tables import AuditEntry


def record(
    session: Session,
    actor: str,
    action: str,
    target: str,
    *,
    tenant: str | None = None,
    counts: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an entry in the caller's transaction, so it exists exactly when the action took effect."""
    entry = AuditEntry(actor=actor, action=action, tenant=tenant, target=target, counts=counts or {})
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session, *, tenant: str | None = None, before_id: int | None = None, limit: int = 100
) -> list[AuditEntry]:
    """Newest first; pass the last id seen as `before_id` for the next page."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if tenant is not None:
        query = query.where(AuditEntry.tenant == tenant)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query))
