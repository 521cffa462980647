"""Tenant routes for managing a user's memory: list, inspect, correct, delete, export, import."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response
from fastapi.responses import StreamingResponse

from memsvc import audit, memories, transfer
from memsvc.api import CallerDep, StateDep, require_user, tenant_of
from memsvc.db import transaction
from memsvc.errors import Invalid
from memsvc.schemas import (
    ImportOut,
    MemoryCorrection,
    MemoryDetailOut,
    MemoryKind,
    MemoryLinkOut,
    MemoryOut,
    MemoryPage,
    MemoryRefOut,
    SourceMessageOut,
)
from memsvc.tables import MemoryUnit

NDJSON = "application/x-ndjson"
# Ingest accepts no control character in user or session ids (and PostgreSQL text cannot hold NUL).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
UserId = Annotated[str, Path(min_length=1, max_length=200, pattern=PRINTABLE)]

router = APIRouter(prefix="/v1")


def memory_out(unit: MemoryUnit, sessions: dict[int, str]) -> MemoryOut:
    return MemoryOut(
        id=memories.memory_id(unit.kind, unit.id),
        kind=unit.kind,  # type: ignore[arg-type]  # one of UNIT_KINDS
        text=unit.text,
        session_id=sessions.get(unit.session_id) if unit.session_id is not None else None,
        source_message_ids=list(unit.source_message_ids),
        occurred_at=unit.occurred_at,
        valid_from=unit.valid_from,
        valid_to=unit.valid_to,
        # A version is always superseded by one of its own kind (a note by a note, a correction by
        # the same kind), so the id needs no second look-up.
        superseded_by=memories.memory_id(unit.kind, unit.superseded_by) if unit.superseded_by else None,
        salience=unit.salience,
        created_at=unit.created_at,
    )


def detail_out(detail: memories.MemoryDetail) -> MemoryDetailOut:
    unit, sessions = detail.unit, detail.sessions
    return MemoryDetailOut(
        **memory_out(unit, sessions).model_dump(),
        attrs=unit.attrs,
        links=[
            MemoryLinkOut(
                relation=link.relation,
                weight=link.weight,
                direction=link.direction,  # type: ignore[arg-type]  # "out" or "in"
                other=MemoryRefOut(
                    id=memories.memory_id(link.other.kind, link.other.id),
                    kind=link.other.kind,  # type: ignore[arg-type]  # one of UNIT_KINDS
                    text=link.other.text,
                ),
            )
            for link in detail.links
        ],
        links_total=detail.links_total,
        history=[memory_out(u, sessions) for u in detail.history],
        sources=[
            SourceMessageOut(
                id=m.external_id,
                session_id=sessions[m.session_id],
                role=m.role,
                speaker=m.speaker,
                content=m.content,
                created_at=m.created_at,
            )
            for m in detail.sources
        ],
    )


@router.get("/users/{user_id}/memories", response_model=MemoryPage)
def list_memories(
    user_id: UserId,
    state: StateDep,
    caller: CallerDep,
    kind: MemoryKind | None = None,
    session_id: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=PRINTABLE, description="the client's session id"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MemoryPage:
    """The user's memory units in a stable order (superseded versions included), a page at a time."""
    with state.factory() as session:
        uid = require_user(session, caller, user_id)
        units, next_cursor = memories.memory_page(
            session, uid, kind=kind, session_external_id=session_id, cursor=cursor, limit=limit
        )
        sessions = memories.session_names(session, units)
    return MemoryPage(memories=[memory_out(u, sessions) for u in units], next_cursor=next_cursor)


@router.get("/users/{user_id}/memories/{memory_id}", response_model=MemoryDetailOut)
def get_memory(user_id: UserId, memory_id: str, state: StateDep, caller: CallerDep) -> MemoryDetailOut:
    """One memory with its edges, every version of it, and the raw messages it came from."""
    kind, unit_id = memories.parse_memory_id(memory_id)
    with state.factory() as session:
        detail = memories.get_memory(session, require_user(session, caller, user_id), unit_id, kind=kind)
    return detail_out(detail)


@router.patch("/users/{user_id}/memories/{memory_id}", response_model=MemoryDetailOut)
def correct_memory(
    user_id: UserId, memory_id: str, body: MemoryCorrection, state: StateDep, caller: CallerDep
) -> MemoryDetailOut:
    """Correct a memory: a new version replaces it from now on; the old one is kept as history."""
    kind, unit_id = memories.parse_memory_id(memory_id)
    if len(body.text) > state.settings.max_message_chars:
        raise Invalid(f"text longer than {state.settings.max_message_chars} characters")
    with transaction(state.factory) as session:
        uid = require_user(session, caller, user_id)
        detail = memories.correct_memory(session, state.embedder, uid, unit_id, body.text, kind=kind)
    return detail_out(detail)


@router.delete("/users/{user_id}/memories/{memory_id}", status_code=204)
def delete_memory(user_id: UserId, memory_id: str, state: StateDep, caller: CallerDep) -> Response:
    """Delete one memory and its edges; every API process's index forgets it. Audited."""
    kind, unit_id = memories.parse_memory_id(memory_id)
    with transaction(state.factory) as session:
        uid = require_user(session, caller, user_id)
        counts = memories.delete_memory(session, uid, unit_id, kind=kind)
        target = f"user {user_id} memory {memory_id}"
        audit.record(session, caller.actor, "delete_memory", target, tenant=caller.tenant, counts=counts)
    return Response(status_code=204)


@router.get(
    "/users/{user_id}/export",
    response_class=StreamingResponse,
    responses={
        200: {"content": {NDJSON: {}}, "description": "JSON Lines: header, sessions, messages, units, links"}
    },
)
def export_user(user_id: UserId, state: StateDep, caller: CallerDep) -> StreamingResponse:
    """The user's whole memory as JSON Lines, streamed: what `import` takes."""
    with state.factory() as session:
        uid = require_user(session, caller, user_id)
    model, dim = state.embedder.model_name, state.embedder.dim

    def lines() -> Iterator[str]:
        with state.factory() as session:
            # One snapshot for the whole file, however long the stream takes.
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            for record in transfer.export_user(session, uid, user_id, model=model, dim=dim):
                yield record.model_dump_json() + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)


@router.post("/users/{user_id}/import", status_code=201, response_model=ImportOut)
def import_user(
    user_id: UserId,
    document: Annotated[bytes, Body(media_type=NDJSON, description="an export's JSON Lines")],
    state: StateDep,
    caller: CallerDep,
) -> ImportOut:
    """Load an export into a new (or empty) user of the caller's tenant, all or nothing."""
    with transaction(state.factory) as session:
        counts = transfer.import_user(
            session,
            tenant_of(caller),
            user_id,
            document,
            model=state.embedder.model_name,
            dim=state.embedder.dim,
        )
    return ImportOut(user_id=user_id, **counts)
