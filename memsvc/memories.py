"""A user's memory as the user's agent manages it: browse, inspect, correct, delete (transfer.py:
export and import).

Memory ids outside are the hit ids search returns ("edu-12"); inside they are memory_unit ids.
Nothing here edits a unit's text in place: a correction is a new version that supersedes the old one,
which is kept (closed with valid_to) so `as_of` searches and the history still see it.
"""

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from memsvc import construct, store
from memsvc.embed import Embedder, content_hash
from memsvc.errors import Conflict, Invalid, NotFound
from memsvc.tables import UNIT_KINDS, ChatSession, MemoryUnit, Message, UnitLink

MEMORY_ID = re.compile(r"(message|episode|edu|note|entity)-([0-9]{1,18})")
CURSOR = re.compile(r"after:([0-9]{1,18})")

# What an agent may correct. A message unit is the raw conversation (immutable); an entity is a
# graph node named by the conversation, merged by name on every build.
CORRECTABLE_KINDS = ("edu", "note", "episode")

# A hub entity (a speaker) can have thousands of edges; the detail shows this many, and the total.
MAX_LINKS = 500


# --- ids and cursors --------------------------------------------------------------------------


def memory_id(kind: str, unit_id: int) -> str:
    return f"{kind}-{unit_id}"


def parse_memory_id(value: str) -> tuple[str, int]:
    """("edu", 12) from "edu-12"; a malformed id is Invalid (a well-formed unknown one is NotFound later)."""
    match = MEMORY_ID.fullmatch(value)
    if match is None:
        raise Invalid(f"memory id {value[:60]!r} is not like 'edu-12' (kind-number; kinds: {UNIT_KINDS})")
    return match.group(1), int(match.group(2))


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raw = ""
    match = CURSOR.fullmatch(raw)
    if match is None:
        raise Invalid("cursor is malformed: pass the previous page's next_cursor unchanged")
    return int(match.group(1))


# --- browsing ---------------------------------------------------------------------------------


def list_memories(
    session: Session,
    user_id: int,
    *,
    kind: str | None,
    session_external_id: str | None,
    after_id: int | None,
    limit: int,
) -> list[MemoryUnit]:
    """The user's units in id order (a stable order for cursors), superseded versions included.
    Vectors are not loaded."""
    query = (
        select(MemoryUnit)
        .options(defer(MemoryUnit.vector))
        .where(MemoryUnit.user_id == user_id)
        .order_by(MemoryUnit.id)
        .limit(limit)
    )
    if kind is not None:
        query = query.where(MemoryUnit.kind == kind)
    if session_external_id is not None:
        query = query.join(ChatSession, ChatSession.id == MemoryUnit.session_id).where(
            ChatSession.external_id == session_external_id
        )
    if after_id is not None:
        query = query.where(MemoryUnit.id > after_id)
    return list(session.scalars(query))


def memory_page(
    session: Session,
    user_id: int,
    *,
    kind: str | None,
    session_external_id: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[MemoryUnit], str | None]:
    """One page and the cursor of the next (None on the last page: one extra row tells)."""
    after_id = decode_cursor(cursor) if cursor is not None else None
    units = list_memories(
        session,
        user_id,
        kind=kind,
        session_external_id=session_external_id,
        after_id=after_id,
        limit=limit + 1,
    )
    more = len(units) > limit
    units = units[:limit]
    return units, encode_cursor(units[-1].id) if more else None


def session_names(session: Session, units: list[MemoryUnit]) -> dict[int, str]:
    """Internal session id -> the client's session id, for these units."""
    return store.session_external_ids(session, [u.session_id for u in units if u.session_id is not None])


@dataclass(frozen=True)
class Link:
    relation: str
    weight: float
    direction: str  # "out": the unit is the edge's source; "in": its target
    other: MemoryUnit


@dataclass(frozen=True)
class MemoryDetail:
    unit: MemoryUnit
    links: list[Link]  # at most MAX_LINKS
    links_total: int
    history: list[MemoryUnit]  # every version of this memory, the unit included, oldest first
    sources: list[Message]  # the raw messages it was built from, in source_message_ids order
    sessions: dict[int, str]  # internal session id -> client's, for the unit, history and sources


def get_memory(session: Session, user_id: int, unit_id: int, *, kind: str | None = None) -> MemoryDetail:
    """One unit with its edges, its versions and the raw messages it came from.

    `kind` is the kind the caller named in the memory id: a unit of another kind is NotFound.
    """
    unit = _unit(session, user_id, unit_id, kind)
    edges = select(UnitLink.relation, UnitLink.weight, UnitLink.dst_id, UnitLink.src_id).where(
        UnitLink.user_id == user_id, or_(UnitLink.src_id == unit.id, UnitLink.dst_id == unit.id)
    )
    total = int(session.scalar(select(func.count()).select_from(edges.subquery())) or 0)
    rows = session.execute(edges.order_by(UnitLink.id).limit(MAX_LINKS)).all()
    others = _units(session, user_id, [dst if src == unit.id else src for _, _, dst, src in rows])
    links = [
        Link(relation, weight, "out" if src == unit.id else "in", others[dst if src == unit.id else src])
        for relation, weight, dst, src in rows
    ]
    history = _history(session, user_id, unit)
    sources = _messages(session, user_id, unit.source_message_ids)
    sessions = store.session_external_ids(
        session,
        [u.session_id for u in history if u.session_id is not None] + [m.session_id for m in sources],
    )
    return MemoryDetail(unit, links, total, history, sources, sessions)


def _unit(session: Session, user_id: int, unit_id: int, kind: str | None, lock: bool = False) -> MemoryUnit:
    query = (
        select(MemoryUnit)
        .options(defer(MemoryUnit.vector))
        .where(MemoryUnit.user_id == user_id, MemoryUnit.id == unit_id)
    )
    unit = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if unit is None or (kind is not None and unit.kind != kind):
        raise NotFound(f"memory {memory_id(kind or 'unit', unit_id)!r} not found")
    return unit


def _units(session: Session, user_id: int, ids: list[int]) -> dict[int, MemoryUnit]:
    if not ids:
        return {}
    rows = session.scalars(
        select(MemoryUnit)
        .options(defer(MemoryUnit.vector))
        .where(MemoryUnit.user_id == user_id, MemoryUnit.id.in_(set(ids)))
    )
    return {u.id: u for u in rows}


def _history(session: Session, user_id: int, unit: MemoryUnit) -> list[MemoryUnit]:
    """The versions this unit superseded (transitively) and those that superseded it."""
    seen = {unit.id: unit}
    later = unit
    while later.superseded_by is not None and later.superseded_by not in seen:
        found = _units(session, user_id, [later.superseded_by]).get(later.superseded_by)
        if found is None:
            break
        seen[found.id] = later = found
    frontier = [unit.id]
    while frontier:  # a note can close more than one older note at once, so this is a tree
        older = session.scalars(
            select(MemoryUnit)
            .options(defer(MemoryUnit.vector))
            .where(MemoryUnit.user_id == user_id, MemoryUnit.superseded_by.in_(frontier))
        ).all()
        frontier = [u.id for u in older if u.id not in seen]
        seen.update({u.id: u for u in older})
    return sorted(seen.values(), key=lambda u: (u.created_at, u.id))


def _messages(session: Session, user_id: int, external_ids: list[str]) -> list[Message]:
    if not external_ids:
        return []
    rows = session.scalars(
        select(Message).where(Message.user_id == user_id, Message.external_id.in_(set(external_ids)))
    )
    by_id = {m.external_id: m for m in rows}
    return [by_id[e] for e in dict.fromkeys(external_ids) if e in by_id]


# --- corrections and deletion -----------------------------------------------------------------


def correct_memory(
    session: Session, embedder: Embedder, user_id: int, unit_id: int, text: str, *, kind: str | None = None
) -> MemoryDetail:
    """Supersede a unit with a corrected version; returns the new version.

    The old unit is closed (valid_to = now, superseded_by = the new one) and kept, in the index too,
    as reconsolidation keeps a superseded note: search skips it unless `as_of` is before now, and
    the index stays equal to Postgres's vectors. The new unit starts being valid now, keeps the
    old one's session, sources, event time, salience and edges, and is embedded here.
    """
    old = _unit(session, user_id, unit_id, kind, lock=True)  # two corrections at once: one waits
    if old.kind not in CORRECTABLE_KINDS:
        raise Invalid(
            f"a {old.kind} memory cannot be corrected (only {', '.join(CORRECTABLE_KINDS)}): "
            + (
                "messages are the raw conversation; correct the memory built from them"
                if old.kind == "message"
                else "entities are named by the conversation itself"
            )
        )
    if old.valid_to is not None or old.superseded_by is not None:
        later = f" by {memory_id(old.kind, old.superseded_by)}" if old.superseded_by else ""
        name = memory_id(old.kind, old.id)
        raise Conflict(f"memory {name!r} is already superseded{later}; correct the current version")
    now = datetime.now(UTC)
    new = store.NewUnit(
        user_id=user_id,
        session_id=old.session_id,
        kind=old.kind,
        # A fresh key: unit keys must stay unique, also across export and import of the user.
        unit_key=f"fix:{uuid.uuid4().hex}",
        text=text,
        content_hash=content_hash(text),
        source_message_ids=list(old.source_message_ids),
        occurred_at=old.occurred_at,
        vector=None,
        embed_model=None,
        attrs=dict(old.attrs, agent_correction=True),
        valid_from=now,
    )
    construct.embed_units(session, embedder, user_id, [new])
    new_id = store.insert_units(session, [new])[new.unit_key]
    store.update_unit(session, new_id, salience=old.salience)
    store.update_unit(session, old.id, valid_to=now, superseded_by=new_id)
    edges = session.execute(
        select(UnitLink.src_id, UnitLink.dst_id, UnitLink.relation, UnitLink.weight).where(
            UnitLink.user_id == user_id, or_(UnitLink.src_id == old.id, UnitLink.dst_id == old.id)
        )
    ).all()
    store.insert_links(
        session,
        user_id,
        [(new_id if s == old.id else s, new_id if d == old.id else d, r, w) for s, d, r, w in edges],
    )
    session.expire_all()  # the updates above went around the ORM objects
    return get_memory(session, user_id, new_id)


def delete_memory(session: Session, user_id: int, unit_id: int, *, kind: str | None = None) -> dict[str, int]:
    """Delete one unit and its edges, and tell every index to forget it; returns counts.

    A message unit is refused: it is rebuilt from the raw message by the next build of its session,
    and memory built from it cites it, so raw messages go only with the whole user (erasure).
    """
    unit = _unit(session, user_id, unit_id, kind, lock=True)
    if unit.kind == "message":
        raise Conflict(
            "a message memory is the raw conversation and is not deleted on its own; delete the "
            "edu/note/episode built from it, or erase the user (DELETE /v1/users/{user_id})"
        )
    links = int(
        session.scalar(
            select(func.count()).where(
                UnitLink.user_id == user_id, or_(UnitLink.src_id == unit.id, UnitLink.dst_id == unit.id)
            )
        )
        or 0
    )
    store.delete_units(session, user_id, [unit.id])
    return {"units": 1, "links": links}
