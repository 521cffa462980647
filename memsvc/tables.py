"""ORM rows: the schema PostgreSQL holds (no logic here)."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names keep Alembic's autogenerate comparison and hand-written migrations in step.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UNIT_KINDS = ("message", "episode", "edu", "note", "entity")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Tenant(Base):
    __tablename__ = "tenant"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _now()


class ApiKey(Base):
    """A tenant's key; only the SHA-256 of the secret is kept."""

    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EndUser(Base):
    """A user of a tenant's agent, named by the tenant's own id."""

    __tablename__ = "end_user"
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()


class ChatSession(Base):
    __tablename__ = "chat_session"
    __table_args__ = (UniqueConstraint("user_id", "external_id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("end_user.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now()


class Job(Base):
    """One ingest request's memory building, as the client sees it (`GET /v1/jobs/{id}`)."""

    __tablename__ = "job"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("end_user.id", ondelete="CASCADE"), index=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | done | failed
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Message(Base):
    """A raw message exactly as the client sent it; never changed after insert."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("user_id", "external_id"),
        Index("ix_message_session_order", "session_id", "created_at", "id"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("end_user.id", ondelete="CASCADE"))
    session_id: Mapped[int] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    speaker: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = _now()


class MemoryUnit(Base):
    """Anything memory is made of (message, episode, EDU, note, entity), with provenance and vector.

    `unit_key` makes building idempotent: a job that runs twice produces the same keys and so
    inserts nothing new. The vector is stored here; the FAISS index is only a cache of it.
    """

    __tablename__ = "memory_unit"
    __table_args__ = (
        UniqueConstraint("user_id", "kind", "unit_key"),
        Index("ix_memory_unit_user_kind", "user_id", "kind"),
        Index("ix_memory_unit_user_hash", "user_id", "content_hash"),
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("end_user.id", ondelete="CASCADE"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    unit_key: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    source_message_ids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("memory_unit.id", ondelete="SET NULL"))
    salience: Mapped[float] = mapped_column(Float, default=0.0)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    embed_model: Mapped[str | None] = mapped_column(String(300))
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = _now()


class UnitLink(Base):
    """An edge of the memory graph between two units (EDU-entity, EDU-episode, note-support...)."""

    __tablename__ = "unit_link"
    __table_args__ = (UniqueConstraint("src_id", "dst_id", "relation"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("end_user.id", ondelete="CASCADE"), index=True)
    src_id: Mapped[int] = mapped_column(ForeignKey("memory_unit.id", ondelete="CASCADE"), index=True)
    dst_id: Mapped[int] = mapped_column(ForeignKey("memory_unit.id", ondelete="CASCADE"), index=True)
    relation: Mapped[str] = mapped_column(String(32))
    weight: Mapped[float] = mapped_column(Float, default=1.0)


class IndexChange(Base):
    """The change sequence every API process tails to keep its FAISS index in step with Postgres.

    Rows hold ids only, never text or vectors. Writers append under one advisory lock held to
    commit, so sequence numbers become visible in order and a reader never skips a gap.
    """

    __tablename__ = "index_change"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    unit_id: Mapped[int | None] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(16))  # add | remove | drop_user


class AuditEntry(Base):
    """One admin action or erasure: who did what to which target, with counts; kept after the
    target is gone (so no foreign keys), and never holding memory text or secrets."""

    __tablename__ = "audit_entry"
    __table_args__ = (Index("ix_audit_entry_tenant_at", "tenant", "at"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[datetime] = _now()
    actor: Mapped[str] = mapped_column(String(100))  # "admin" or "key <id> (<prefix>)"
    action: Mapped[str] = mapped_column(String(64))  # e.g. erase_user, delete_memory, revoke_key
    tenant: Mapped[str | None] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(500))
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
