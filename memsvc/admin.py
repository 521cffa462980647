"""Admin routes (/v1/admin): only the admin key may call them. Every change writes its audit entry
in its own transaction; lists page by `?cursor=` (the previous page's `next_cursor`) and `?limit=`."""

import time
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, Path, Query

from memsvc import audit, index_health, inspection, memories, recall, reembed, store
from memsvc.api import Caller, CallerDep, StateDep
from memsvc.db import transaction
from memsvc.errors import Forbidden
from memsvc.jobs import enqueue_build, enqueue_reembed, latest_reembed
from memsvc.memory_routes import detail_out, memory_out
from memsvc.schemas import (
    AdminAuditOut,
    AdminAuditPage,
    AdminGraphEdge,
    AdminGraphNode,
    AdminGraphOut,
    AdminIndexHealth,
    AdminIndexTenant,
    AdminIndexUser,
    AdminJobOut,
    AdminJobPage,
    AdminKeyOut,
    AdminKeyPage,
    AdminRebuildOut,
    AdminReembedOut,
    AdminReembedRequest,
    AdminTenantOut,
    AdminTenantPage,
    AdminUserOut,
    AdminUserPage,
    KeyCreate,
    KeyCreated,
    MemoryDetailOut,
    MemoryKind,
    MemoryPage,
)
from memsvc.tables import ApiKey


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("admin key required")
    return caller


router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])

Limit = Annotated[int, Query(ge=1, le=500)]
BIGINT = 2**63 - 1  # row ids are Postgres bigints: a larger number is refused, never sent on
IdCursor = Annotated[int | None, Query(ge=0, le=BIGINT, description="next_cursor of the previous page")]
T = TypeVar("T")


def _page(rows: Sequence[T], limit: int, cursor_of: Callable[[T], object]) -> tuple[list[T], str | None]:
    """Rows fetched with limit + 1: the extra one only says whether another page exists."""
    kept = list(rows[:limit])
    return kept, str(cursor_of(kept[-1])) if len(rows) > limit else None


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, state: StateDep, caller: CallerDep) -> KeyCreated:
    """A new tenant key (the tenant is created on first use). The secret is shown only here."""
    with transaction(state.factory) as session:
        key, secret = store.create_key(session, body.tenant, body.name)
        audit.record(session, caller.actor, "create_key", f"key {key.id} ({key.prefix})", tenant=body.tenant)
    return KeyCreated(id=key.id, tenant=body.tenant, name=key.name, key=secret)


# --- tenants and users ------------------------------------------------------------------------


@router.get("/tenants", response_model=AdminTenantPage)
def list_tenants(state: StateDep, cursor: IdCursor = None, limit: Limit = 100) -> AdminTenantPage:
    """Tenants with their counts of users, keys, messages and memory units."""
    with state.factory() as session:
        rows, after = _page(
            inspection.tenants(session, after_id=cursor or 0, limit=limit + 1), limit, lambda t: t.id
        )
    items = [AdminTenantOut.model_validate(t, from_attributes=True) for t in rows]
    return AdminTenantPage(items=items, next_cursor=after)


@router.get("/tenants/{tenant}/users", response_model=AdminUserPage)
def list_users(tenant: str, state: StateDep, cursor: IdCursor = None, limit: Limit = 100) -> AdminUserPage:
    """A tenant's users with their memory statistics and this API process's index size for each."""
    index = state.index
    with state.factory() as session:
        tenant_id = inspection.get_tenant(session, tenant).id
        users, after = _page(
            inspection.users(session, tenant_id, after_id=cursor or 0, limit=limit + 1), limit, lambda u: u.id
        )
        stats = inspection.user_stats(session, [u.id for u in users], index.model)
        recall.refresh_index(session, index)
    items = []
    for user in users:
        s = stats[user.id]
        items.append(
            AdminUserOut(
                id=user.external_id,
                created_at=user.created_at,
                messages=s.messages,
                sessions=s.sessions,
                episodes=s.by_kind.get("episode", 0),
                edus=s.by_kind.get("edu", 0),
                notes=s.by_kind.get("note", 0),
                entities=s.by_kind.get("entity", 0),
                message_units=s.by_kind.get("message", 0),
                edges=s.edges,
                vectors=s.vectors,
                indexed_vectors=s.indexed_vectors,
                index_size=index.count(user.id),
                index_type=index.index_type(user.id),
            )
        )
    return AdminUserPage(items=items, next_cursor=after)


@router.get("/tenants/{tenant}/users/{user_id}/graph", response_model=AdminGraphOut)
def graph(
    tenant: str,
    user_id: str,
    state: StateDep,
    node: Annotated[str, Query(max_length=40, description="a memory id such as 'edu-12'")],
    depth: Annotated[int, Query(ge=1, le=3)] = 1,
    limit: Annotated[int, Query(ge=1, le=2000)] = 200,
) -> AdminGraphOut:
    """The memory graph within `depth` links of a node: nodes nearest first, capped at `limit`."""
    kind, unit_id = memories.parse_memory_id(node)
    with state.factory() as session:
        user = inspection.get_user(session, tenant, user_id)
        found = inspection.neighbourhood(session, user.id, kind, unit_id, depth=depth, limit=limit)
    names = {n.id: f"{n.kind}-{n.id}" for n in found.nodes}
    return AdminGraphOut(
        node=node,
        depth=depth,
        limit=limit,
        truncated=found.truncated,
        nodes=[AdminGraphNode(id=names[n.id], kind=n.kind, text=n.text, hops=n.hops) for n in found.nodes],
        edges=[
            AdminGraphEdge(src=names[s], dst=names[d], relation=r, weight=w) for s, d, r, w in found.edges
        ],
    )


@router.get("/tenants/{tenant}/users/{user_id}/memories", response_model=MemoryPage)
def list_memories(
    tenant: str,
    user_id: str,
    state: StateDep,
    kind: MemoryKind | None = None,
    session_id: Annotated[str | None, Query(max_length=200, description="the client's session id")] = None,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 50,
) -> MemoryPage:
    """Any user's memory units, as their tenant sees them (GET /v1/users/{user_id}/memories)."""
    with state.factory() as session:
        user = inspection.get_user(session, tenant, user_id)
        units, after = memories.memory_page(
            session, user.id, kind=kind, session_external_id=session_id, cursor=cursor, limit=limit
        )
        sessions = memories.session_names(session, units)
    return MemoryPage(memories=[memory_out(u, sessions) for u in units], next_cursor=after)


@router.get("/tenants/{tenant}/users/{user_id}/memories/{memory_id}", response_model=MemoryDetailOut)
def get_memory(tenant: str, user_id: str, memory_id: str, state: StateDep) -> MemoryDetailOut:
    """One memory with its links, versions and the raw messages it came from."""
    kind, unit_id = memories.parse_memory_id(memory_id)
    with state.factory() as session:
        user = inspection.get_user(session, tenant, user_id)
        detail = memories.get_memory(session, user.id, unit_id, kind=kind)
    return detail_out(detail)


# --- jobs -------------------------------------------------------------------------------------


def _job_out(row: inspection.JobRow) -> AdminJobOut:
    job = row.job
    return AdminJobOut(
        id=job.id,
        status=job.status,  # type: ignore[arg-type]  # the column holds only these four
        error=job.error,
        attempts=job.attempts,
        tenant=row.tenant,
        user_id=row.user,
        session_id=row.session,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.get("/jobs", response_model=AdminJobPage)
def list_jobs(
    state: StateDep,
    status: Literal["queued", "running", "done", "failed"] | None = None,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[
        str | None, Query(max_length=100, description="next_cursor of the previous page")
    ] = None,
    limit: Limit = 100,
) -> AdminJobPage:
    """Ingest jobs newest first, with their errors and attempts."""
    with state.factory() as session:
        tenant_id = inspection.get_tenant(session, tenant).id if tenant is not None else None
        found = inspection.jobs(session, status=status, tenant_id=tenant_id, cursor=cursor, limit=limit + 1)
    rows, after = _page(found, limit, lambda r: inspection.job_cursor(r.job))
    return AdminJobPage(items=[_job_out(r) for r in rows], next_cursor=after)


@router.post("/jobs/{job_id}/retry", status_code=202, response_model=AdminJobOut)
def retry_job(job_id: str, state: StateDep, caller: CallerDep) -> AdminJobOut:
    """Queue a failed job's build again (409 unless it failed)."""
    with transaction(state.factory) as session:
        job, tenant = inspection.failed_job(session, job_id)
        store.set_job_status(session, job.id, "queued")
        enqueue_build(state.queue, session, job.id, job.user_id)
        audit.record(session, caller.actor, "retry_job", f"job {job.id}", tenant=tenant)
        (row,) = inspection.jobs(session, status=None, tenant_id=None, cursor=None, limit=1, job_id=job.id)
    return _job_out(row)


# --- index ------------------------------------------------------------------------------------


@router.get("/index", response_model=AdminIndexHealth)
def show_index_health(
    state: StateDep, tenant: Annotated[str | None, Query(max_length=200)] = None
) -> AdminIndexHealth:
    """This API process's FAISS index against Postgres: per tenant, and per user with ?tenant=."""
    with state.factory() as session:
        health = index_health.index_health(session, state.index, tenant)
    users = None
    if health.users is not None:
        users = [AdminIndexUser.model_validate(u, from_attributes=True) for u in health.users]
    return AdminIndexHealth(
        ok=health.ok,
        model=health.model,
        dim=health.dim,
        index_seq=health.index_seq,
        db_seq=health.db_seq,
        applied=health.applied,
        postgres_vectors=sum(t.postgres_vectors for t in health.tenants),
        faiss_vectors=sum(t.faiss_vectors for t in health.tenants) + health.orphan_vectors,
        orphan_vectors=health.orphan_vectors,
        tenants=[AdminIndexTenant.model_validate(t, from_attributes=True) for t in health.tenants],
        users=users,
    )


@router.post("/index/rebuild", response_model=AdminRebuildOut)
def rebuild_index(state: StateDep, caller: CallerDep) -> AdminRebuildOut:
    """Rebuild this API process's FAISS index from Postgres and save it."""
    started = time.monotonic()
    with transaction(state.factory) as session:
        vectors, users = index_health.rebuild_index(session, state.index)
        counts = {"vectors": vectors, "users": users, "seq": state.index.seq}
        audit.record(session, caller.actor, "rebuild_index", f"index {state.index.model}", counts=counts)
    return AdminRebuildOut(
        model=state.index.model,
        vectors=vectors,
        users=users,
        seq=state.index.seq,
        seconds=round(time.monotonic() - started, 3),
    )


# --- re-embedding -----------------------------------------------------------------------------


def _reembed_out(state: StateDep, tenant: str, model: str) -> AdminReembedOut:
    with state.factory() as session:
        tenant_id = inspection.get_tenant(session, tenant).id
        done, remaining = reembed.progress(session, tenant_id, model)
        job = latest_reembed(session, tenant_id)
    return AdminReembedOut(
        tenant=tenant,
        model=model,
        done=done,
        remaining=remaining,
        job_id=job[0] if job else None,
        job_status=job[1] if job else None,
    )


@router.post("/tenants/{tenant}/reembed", status_code=202, response_model=AdminReembedOut)
def start_reembed(
    tenant: str, state: StateDep, caller: CallerDep, body: AdminReembedRequest | None = None
) -> AdminReembedOut:
    """Queue a re-embed of the tenant's memory with `model` (default: the configured one)."""
    body = body or AdminReembedRequest()
    model = body.model or state.settings.embed_model
    with transaction(state.factory) as session:
        tenant_id = inspection.get_tenant(session, tenant).id
        done, remaining = reembed.progress(session, tenant_id, model)
        job_id = enqueue_reembed(state.queue, session, tenant_id, model, body.batch_size)
        counts = {"job_id": job_id, "done": done, "remaining": remaining, "batch_size": body.batch_size}
        audit.record(
            session,
            caller.actor,
            "reembed_tenant",
            f"tenant {tenant} to {model}",
            tenant=tenant,
            counts=counts,
        )
    return _reembed_out(state, tenant, model)


@router.get("/tenants/{tenant}/reembed", response_model=AdminReembedOut)
def reembed_progress(
    tenant: str, state: StateDep, model: Annotated[str | None, Query(min_length=1, max_length=300)] = None
) -> AdminReembedOut:
    """How far a re-embed to `model` (default: the configured one) has come."""
    return _reembed_out(state, tenant, model or state.settings.embed_model)


# --- keys and audit ---------------------------------------------------------------------------


def _key_out(key: ApiKey, tenant: str) -> AdminKeyOut:
    return AdminKeyOut(
        id=key.id,
        tenant=tenant,
        name=key.name,
        prefix=key.prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.get("/keys", response_model=AdminKeyPage)
def list_keys(
    state: StateDep,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    cursor: IdCursor = None,
    limit: Limit = 100,
) -> AdminKeyPage:
    """Keys (never their secrets or hashes), oldest first."""
    with state.factory() as session:
        tenant_id = inspection.get_tenant(session, tenant).id if tenant is not None else None
        found = inspection.keys(session, tenant_id=tenant_id, after_id=cursor or 0, limit=limit + 1)
    rows, after = _page(found, limit, lambda r: r[0].id)
    return AdminKeyPage(items=[_key_out(k, t) for k, t in rows], next_cursor=after)


@router.delete("/keys/{key_id}", response_model=AdminKeyOut)
def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=BIGINT)], state: StateDep, caller: CallerDep
) -> AdminKeyOut:
    """Revoke a key: it gets 401 from the next request on. Revoking again changes nothing (200)."""
    with transaction(state.factory) as session:
        key, tenant, revoked = inspection.revoke_key(session, key_id)
        if revoked:
            audit.record(session, caller.actor, "revoke_key", f"key {key.id} ({key.prefix})", tenant=tenant)
    return _key_out(key, tenant)


@router.get("/audit", response_model=AdminAuditPage)
def list_audit(
    state: StateDep,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    cursor: IdCursor = None,
    limit: Limit = 100,
) -> AdminAuditPage:
    """Admin actions and erasures, newest first (entries outlive their tenant, so an unknown tenant
    is just an empty page)."""
    with state.factory() as session:
        found = audit.entries(session, tenant=tenant, before_id=cursor, limit=limit + 1)
    rows, after = _page(found, limit, lambda e: e.id)
    items = [AdminAuditOut.model_validate(e, from_attributes=True) for e in rows]
    return AdminAuditPage(items=items, next_cursor=after)
