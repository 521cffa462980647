"""Export and import of one user's whole memory as JSON Lines (rows, vectors and edges), so that
the import, on this deployment or another running the same model, searches exactly alike."""

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from memsvc import construct, store
from memsvc.embed import content_hash
from memsvc.errors import Conflict, Invalid
from memsvc.schemas import (
    ExportHeader,
    ExportLine,
    ExportLink,
    ExportMessage,
    ExportSession,
    ExportUnit,
)
from memsvc.tables import ChatSession, EndUser, MemoryUnit, Message, UnitLink


def export_user(
    session: Session, user_id: int, external_user_id: str, *, model: str, dim: int
) -> Iterator[ExportLine]:
    """Every row of the user's memory as export lines: header, sessions, messages, units, links.

    Rows refer to each other by their ids here; those ids mean nothing outside the file, and an
    import maps them to its own. Run it in one REPEATABLE READ transaction for a consistent file.
    """
    yield ExportHeader(model=model, dim=dim, user_id=external_user_id, exported_at=datetime.now(UTC))
    sessions = select(ChatSession).where(ChatSession.user_id == user_id).order_by(ChatSession.id)
    for chat in session.scalars(sessions):
        yield ExportSession(id=chat.id, external_id=chat.external_id, created_at=chat.created_at)
    messages = select(Message).where(Message.user_id == user_id).order_by(Message.id)
    for m in session.scalars(messages.execution_options(yield_per=1000)):
        yield ExportMessage(
            id=m.id,
            session=m.session_id,
            external_id=m.external_id,
            role=m.role,  # type: ignore[arg-type]  # stored only after the same Literal check
            speaker=m.speaker,
            content=m.content,
            created_at=m.created_at,
            received_at=m.received_at,
        )
    units = select(MemoryUnit).where(MemoryUnit.user_id == user_id).order_by(MemoryUnit.id)
    for u in session.scalars(units.execution_options(yield_per=500)):
        yield ExportUnit(
            id=u.id,
            kind=u.kind,  # type: ignore[arg-type]  # one of UNIT_KINDS
            unit_key=u.unit_key,
            session=u.session_id,
            text=u.text,
            content_hash=u.content_hash,
            source_message_ids=list(u.source_message_ids),
            occurred_at=u.occurred_at,
            valid_from=u.valid_from,
            valid_to=u.valid_to,
            superseded_by=u.superseded_by,
            salience=u.salience,
            attrs=u.attrs,
            embed_model=u.embed_model,
            vector=base64.b64encode(u.vector).decode() if u.vector is not None else None,
            created_at=u.created_at,
        )
    links = select(UnitLink).where(UnitLink.user_id == user_id).order_by(UnitLink.id)
    for link in session.scalars(links.execution_options(yield_per=5000)):
        yield ExportLink(src=link.src_id, dst=link.dst_id, relation=link.relation, weight=link.weight)


_line = TypeAdapter[ExportLine](ExportLine)


@dataclass
class _Parsed:
    header: ExportHeader
    sessions: list[ExportSession]
    messages: list[ExportMessage]
    units: list[tuple[int, ExportUnit, bytes | None]]  # (line number, unit, vector)
    links: list[tuple[int, ExportLink]]


def import_user(
    session: Session, tenant_id: int, external_user_id: str, document: bytes, *, model: str, dim: int
) -> dict[str, int]:
    """Load an export into a user that has no memory yet, ids remapped; returns counts.

    Every line is checked before anything is written (a bad one is Invalid naming its line). The
    vectors are kept, so the export's model must be this deployment's: a file of another model is
    a Conflict (re-embedding on import would not reproduce the exported user's search anyway).
    Call inside one transaction: the caller's commit makes all of it visible, or none.
    """
    parsed = _parse(document, model, dim)
    user = store.get_or_create_user(session, tenant_id, external_user_id)
    # Locked so two imports into one new user cannot both find it empty.
    session.execute(select(EndUser.id).where(EndUser.id == user.id).with_for_update())
    held = store.user_stats(session, [user.id])[user.id]
    if held.messages or held.sessions or held.edges or held.by_kind:
        raise Conflict(f"user {external_user_id!r} already has memory; import only into a new or empty user")

    chats = {
        s.id: ChatSession(user_id=user.id, external_id=s.external_id, created_at=s.created_at)
        for s in parsed.sessions
    }
    session.add_all(chats.values())
    session.flush()
    jobs = {
        ref: store.create_job(session, user.id, chats[ref].id, status="done")
        for ref in dict.fromkeys(m.session for m in parsed.messages)
    }
    messages = {
        m.external_id: Message(
            user_id=user.id,
            session_id=chats[m.session].id,
            job_id=jobs[m.session].id,
            external_id=m.external_id,
            role=m.role,
            speaker=m.speaker,
            content=m.content,
            created_at=m.created_at,
            received_at=m.received_at,
        )
        for m in parsed.messages
    }
    session.add_all(messages.values())
    session.flush()

    units: dict[int, MemoryUnit] = {}
    for _, u, vector in parsed.units:
        key = u.unit_key
        if u.kind == "message":  # its key names the message row, whose id is new here
            key = construct.message_unit(messages[u.source_message_ids[0]], user.id).unit_key
        units[u.id] = MemoryUnit(
            user_id=user.id,
            session_id=chats[u.session].id if u.session is not None else None,
            kind=u.kind,
            unit_key=key,
            text=u.text,
            content_hash=u.content_hash,
            source_message_ids=u.source_message_ids,
            occurred_at=u.occurred_at,
            valid_from=u.valid_from,
            valid_to=u.valid_to,
            salience=u.salience,
            attrs=u.attrs,
            embed_model=u.embed_model,
            vector=vector,
            created_at=u.created_at,
        )
    session.add_all(units.values())
    session.flush()
    for _, u, _ in parsed.units:
        if u.superseded_by is not None:
            units[u.id].superseded_by = units[u.superseded_by].id
    session.flush()
    store.insert_links(
        session,
        user.id,
        [(units[ln.src].id, units[ln.dst].id, ln.relation, ln.weight) for _, ln in parsed.links],
    )
    indexed = [
        u.id
        for u in units.values()
        if u.kind in store.INDEXED_KINDS and u.vector is not None and u.embed_model == model
    ]
    store.publish_changes(session, user.id, "add", indexed)
    return {
        "sessions": len(chats),
        "messages": len(messages),
        "units": len(units),
        "links": len(parsed.links),
        "vectors": len(indexed),
    }


def _parse(document: bytes, model: str, dim: int) -> _Parsed:
    """Every line checked: syntax, shape, references; Invalid names the first bad line."""
    header: ExportHeader | None = None
    sessions: dict[int, ExportSession] = {}
    messages: dict[str, tuple[int, ExportMessage]] = {}
    units: dict[int, tuple[int, ExportUnit, bytes | None]] = {}
    links: list[tuple[int, ExportLink]] = []
    message_refs: set[int] = set()
    session_names: set[str] = set()
    unit_keys: dict[tuple[str, str], int] = {}  # what makes a unit unique in a user -> its line
    for number, raw in enumerate(document.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record = _parse_line(number, raw)
        if header is None:
            if not isinstance(record, ExportHeader):
                raise Invalid(f"line {number}: the first line must be the export header")
            if record.model != model or record.dim != dim:
                raise Conflict(
                    f"the export's vectors are of model {record.model!r} (dim {record.dim}); this "
                    f"deployment embeds with {model!r} (dim {dim}): import it where that model runs"
                )
            header = record
        elif isinstance(record, ExportHeader):
            raise Invalid(f"line {number}: a second header")
        elif isinstance(record, ExportSession):
            if record.id in sessions or record.external_id in session_names:
                raise Invalid(f"line {number}: session {record.external_id!r} (id {record.id}) repeats")
            sessions[record.id] = record
            session_names.add(record.external_id)
        elif isinstance(record, ExportMessage):
            if record.session not in sessions:
                raise Invalid(f"line {number}: message names session {record.session}, not given before it")
            if record.external_id in messages or record.id in message_refs:
                raise Invalid(f"line {number}: message {record.external_id!r} repeats")
            messages[record.external_id] = (number, record)
            message_refs.add(record.id)
        elif isinstance(record, ExportUnit):
            vector = _check_unit(number, record, header, sessions, messages, units)
            # A message unit's key is made anew from its message's new row: the message must not repeat.
            key = record.source_message_ids[0] if record.kind == "message" else record.unit_key
            first = unit_keys.setdefault((record.kind, key), number)
            if first != number:
                raise Invalid(f"line {number}: {record.kind} unit {key!r} repeats line {first}")
            units[record.id] = (number, record, vector)
        else:
            for end in (record.src, record.dst):
                if end not in units:
                    raise Invalid(f"line {number}: link names unit {end}, not given before it")
            links.append((number, record))
    if header is None:
        raise Invalid("line 1: empty document; an export starts with its header line")
    for number, unit, _ in units.values():
        if unit.superseded_by is not None:
            later = units.get(unit.superseded_by)
            if later is None or later[1].kind != unit.kind or unit.superseded_by == unit.id:
                raise Invalid(f"line {number}: superseded_by names no other {unit.kind} unit of the file")
    messages_in_order = [m for _, m in messages.values()]
    return _Parsed(header, list(sessions.values()), messages_in_order, list(units.values()), links)


def _parse_line(number: int, raw: bytes) -> ExportLine:
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        bad = _bad_string(data)
    except UnicodeDecodeError:
        raise Invalid(f"line {number}: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Invalid(f"line {number}: not JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # NaN or Infinity
        raise Invalid(f"line {number}: {exc}") from None
    except RecursionError:
        raise Invalid(f"line {number}: nested too deeply") from None
    if bad:
        raise Invalid(f"line {number}: {bad}")
    try:
        return _line.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        raise Invalid(f"line {number}: {problems}") from None


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")  # nor does PostgreSQL's JSONB take it


def _bad_string(value: Any) -> str | None:
    """PostgreSQL stores neither NUL characters nor lone surrogates (which JSON escapes can make)."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a string contains a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string contains a lone surrogate"
        return None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            found = _bad_string(item)
            if found:
                return found
    return None


def _check_unit(
    number: int,
    unit: ExportUnit,
    header: ExportHeader | None,
    sessions: dict[int, ExportSession],
    messages: dict[str, tuple[int, ExportMessage]],
    units: dict[int, tuple[int, ExportUnit, bytes | None]],
) -> bytes | None:
    """The unit's references and vector are sound; returns the vector's bytes."""
    assert header is not None  # the header line came first
    if unit.id in units:
        raise Invalid(f"line {number}: unit id {unit.id} repeats")
    if unit.session is not None and unit.session not in sessions:
        raise Invalid(f"line {number}: unit names session {unit.session}, not given before it")
    missing = [s for s in unit.source_message_ids if s not in messages]
    if missing:
        raise Invalid(f"line {number}: source messages not in the file: {missing[:5]}")
    if unit.kind == "message" and (len(unit.source_message_ids) != 1 or unit.session is None):
        raise Invalid(f"line {number}: a message unit needs its session and exactly one source message")
    if unit.content_hash != content_hash(unit.text):
        raise Invalid(f"line {number}: content_hash is not the SHA-256 of text")
    if unit.vector is None:
        return None
    if unit.embed_model is None:
        raise Invalid(f"line {number}: a vector needs its embed_model")
    try:
        vector = base64.b64decode(unit.vector, validate=True)
    except binascii.Error:
        raise Invalid(f"line {number}: vector is not base64") from None
    # A vector of another model (a re-embed was under way) is kept as it is, for the re-embed to
    # finish; only the export's model has a known dimension.
    size = 4 * header.dim if unit.embed_model == header.model else len(vector) - len(vector) % 4
    if not vector or len(vector) != size or not np.isfinite(np.frombuffer(vector, dtype=np.float32)).all():
        raise Invalid(f"line {number}: vector is not {size // 4 or 'some'} finite float32 values")
    return vector
