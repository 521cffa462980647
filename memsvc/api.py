"""Tenant routes (/v1): ingest, jobs, search, erasure; and the key check every /v1 route makes."""

import hmac
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from memsvc import audit, recall, store
from memsvc.db import transaction
from memsvc.errors import Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from memsvc.jobs import enqueue_build
from memsvc.schemas import (
    FeedbackOut,
    FeedbackRequest,
    HitOut,
    IngestRequest,
    IngestResponse,
    JobOut,
    SearchRequest,
    SearchResponse,
    UserOut,
)
from memsvc.settings import Settings
from memsvc.state import AppState

log = logging.getLogger(__name__)

bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Caller:
    tenant_id: int | None  # None for the admin key
    tenant: str | None
    key_id: int | None

    key_prefix: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    @property
    def actor(self) -> str:
        """How the audit log names the caller (never the secret)."""
        return "admin" if self.is_admin else f"key {self.key_id} ({self.key_prefix})"


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.memsvc
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_caller(
    state: StateDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized("missing Authorization: Bearer <key>")
    secret = creds.credentials
    admin = state.settings.admin_key
    if admin is not None and hmac.compare_digest(secret.encode(), admin.get_secret_value().encode()):
        return Caller(tenant_id=None, tenant=None, key_id=None)
    with state.factory() as session:
        found = store.find_key(session, secret)
    if found is None:
        raise Unauthorized("unknown or revoked key")
    key, tenant = found
    # Counted only once authenticated, so a stranger cannot use up a tenant's allowance. The admin
    # key is not limited: it is the operator's own, and must work while a tenant floods the API.
    wait_s = state.limiter.take(f"key-{key.id}")
    if wait_s > 0:
        raise RateLimited(
            f"rate limit of {state.limiter.per_s:g} requests/s (burst {state.limiter.burst}) "
            f"exceeded for key {key.prefix}; retry after {wait_s:.2f} s",
            wait_s,
        )
    return Caller(tenant_id=tenant.id, tenant=tenant.name, key_id=key.id, key_prefix=key.prefix)


CallerDep = Annotated[Caller, Depends(get_caller)]


def tenant_of(caller: Caller) -> int:
    if caller.tenant_id is None:
        raise Forbidden("the admin key manages keys; use a tenant key for memory routes")
    return caller.tenant_id


def require_user(session: Session, caller: Caller, user_id: str) -> int:
    user = store.get_user(session, tenant_of(caller), user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    return user.id


router = APIRouter(prefix="/v1")


@router.post(
    "/users/{user_id}/sessions/{session_id}/messages",
    status_code=202,
    response_model=IngestResponse,
    responses={200: {"model": IngestResponse, "description": "wait=true and the memory is searchable"}},
)
def ingest(
    user_id: str, session_id: str, body: IngestRequest, state: StateDep, caller: CallerDep
) -> Response:
    """Store messages and queue their memory building, all in one transaction."""
    tenant_id = tenant_of(caller)
    _check_limits(body, state.settings)
    messages = [
        store.NewMessage(
            external_id=m.id,
            role=m.role,
            speaker=m.speaker or m.role,
            content=m.content,
            created_at=m.created_at,
        )
        for m in body.messages
    ]
    with transaction(state.factory) as session:
        user = store.get_or_create_user(session, tenant_id, _checked_id(user_id, "user_id"))
        chat = store.get_or_create_session(session, user.id, _checked_id(session_id, "session_id"))
        job = store.create_job(session, user.id, chat.id)
        accepted = store.insert_messages(session, user.id, chat.id, job.id, messages)
        if accepted:
            enqueue_build(state.queue, session, job.id, user.id)
        else:
            store.set_job_status(session, job.id, "done")
    status = "queued" if accepted else "done"
    log.info(
        "ingest user=%s session=%s job=%s accepted=%d duplicates=%d",
        user_id,
        session_id,
        job.id,
        accepted,
        len(messages) - accepted,
    )
    code = 202
    if body.wait and accepted:
        status = wait_for_job(state, job.id)
        code = 200 if status == "done" else 202
    elif body.wait:
        code = 200
    out = IngestResponse(job_id=job.id, accepted=accepted, duplicates=len(messages) - accepted, status=status)
    return JSONResponse(out.model_dump(), status_code=code)


def _check_limits(body: IngestRequest, settings: Settings) -> None:
    if len(body.messages) > settings.max_messages_per_request:
        raise Invalid(
            f"at most {settings.max_messages_per_request} messages per request, got {len(body.messages)}"
        )
    for m in body.messages:
        if len(m.content) > settings.max_message_chars:
            raise Invalid(f"message {m.id!r}: content longer than {settings.max_message_chars} characters")


def wait_for_job(state: AppState, job_id: str) -> str:
    """Block until the job is done (and this process's index has it) or failed, or time runs out."""
    deadline = time.monotonic() + state.settings.wait_timeout_s
    delay = 0.02
    while True:
        with state.factory() as session:
            job = store.get_job(session, job_id)
            status = job.status if job else "failed"
            if status == "done":
                recall.refresh_index(session, state.index)
                return status
        if status == "failed" or time.monotonic() > deadline:
            return status
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _checked_id(value: str, name: str) -> str:
    if not value or len(value) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid(f"{name} must be 1-200 printable characters")
    return value


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, state: StateDep, caller: CallerDep) -> JobOut:
    with state.factory() as session:
        job = store.get_tenant_job(session, tenant_of(caller), job_id[:36])
        if job is None:
            raise NotFound(f"job {job_id!r} not found")
        return JobOut.model_validate(job, from_attributes=True)


@router.post("/users/{user_id}/search", response_model=SearchResponse)
def search(user_id: str, body: SearchRequest, state: StateDep, caller: CallerDep) -> SearchResponse:
    with state.factory() as session:
        uid = require_user(session, caller, user_id)
        result = recall.search(
            session,
            state.index,
            state.embedder,
            uid,
            body.query,
            limit=body.limit,
            max_tokens=body.max_tokens,
            mode=body.mode,
            as_of=body.as_of,
            occurred=(body.occurred_after, body.occurred_before),
            asked_on=body.asked_at.date() if body.asked_at else None,
        )
    return SearchResponse(
        hits=[
            HitOut(
                id=f"{h.unit.kind}-{h.unit.id}",
                kind=h.unit.kind,  # type: ignore[arg-type]  # recall returns only hit kinds
                text=h.unit.text,
                score=round(h.score, 6),
                session_id=h.unit.session_external_id,
                source_message_ids=list(h.unit.source_message_ids),
                occurred_at=h.unit.occurred_at,
                tokens=h.tokens,
            )
            for h in result.hits
        ],
        context=result.context,
        context_tokens=result.context_tokens,
    )


@router.post("/users/{user_id}/feedback", response_model=FeedbackOut)
def feedback(user_id: str, body: FeedbackRequest, state: StateDep, caller: CallerDep) -> FeedbackOut:
    """Tell memsvc which hits were used: they rank higher in later searches, unused ones lower."""

    def unit_id(hit_id: str) -> int:
        return int(hit_id.rsplit("-", 1)[1])

    with transaction(state.factory) as session:
        uid = require_user(session, caller, user_id)
        updated = recall.record_feedback(
            session, uid, [unit_id(h) for h in body.used], [unit_id(h) for h in body.unused]
        )
    return FeedbackOut(updated=updated)


@router.get("/users/{user_id}", response_model=UserOut)
def get_user(user_id: str, state: StateDep, caller: CallerDep) -> UserOut:
    """How much memory the user has."""
    with state.factory() as session:
        uid = require_user(session, caller, user_id)
        stats = store.user_stats(session, [uid])[uid]
    by_kind = {kind: stats.by_kind.get(kind, 0) for kind in store.INDEXED_KINDS}
    return UserOut(
        id=user_id,
        messages=stats.messages,
        sessions=stats.sessions,
        units=sum(by_kind.values()),
        by_kind=by_kind,
        entities=stats.by_kind.get("entity", 0),
        links=stats.edges,
    )


@router.delete("/users/{user_id}", status_code=204)
def erase_user(user_id: str, state: StateDep, caller: CallerDep) -> Response:
    """Erase the user: every message, unit, link, job and vector; the index forgets at once."""
    with transaction(state.factory) as session:
        user = store.get_user(session, tenant_of(caller), user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        counts = store.erase_user(session, user)
        audit.record(
            session, caller.actor, "erase_user", f"user {user_id}", tenant=caller.tenant, counts=counts
        )
    with state.factory() as session:
        recall.refresh_index(session, state.index)
    state.index.save()  # so no file under the data dir keeps the user's vectors either
    log.info("erased user %s of tenant %s: %s", user_id, caller.tenant, counts)
    return Response(status_code=204)
