"""What the admin API reads: tenants, users and their statistics, graph neighbourhoods, jobs, keys
(index_health.py: this process's FAISS index against Postgres)."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ScalarSelect, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from memsvc import store
from memsvc.errors import Conflict, Invalid, NotFound
from memsvc.tables import ApiKey, ChatSession, EndUser, Job, MemoryUnit, Message, Tenant, UnitLink

# --- tenants and users ------------------------------------------------------------------------


@dataclass(frozen=True)
class TenantStats:
    id: int
    name: str
    created_at: datetime
    users: int
    keys_active: int
    keys_revoked: int
    messages: int
    units: int


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalars(select(Tenant).where(Tenant.name == name)).one_or_none()
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found")
    return tenant


def get_user(session: Session, tenant_name: str, external_id: str) -> EndUser:
    """A tenant's user by the tenant's own id; unknown tenant or user is NotFound."""
    user = store.get_user(session, get_tenant(session, tenant_name).id, external_id)
    if user is None:
        raise NotFound(f"user {external_id!r} of tenant {tenant_name!r} not found")
    return user


def tenants(session: Session, *, after_id: int, limit: int) -> list[TenantStats]:
    """Tenants in id order after `after_id`, each with its counts (one query, correlated counts)."""

    def count_keys(revoked: bool) -> ScalarSelect[int]:
        state = ApiKey.revoked_at.is_not(None) if revoked else ApiKey.revoked_at.is_(None)
        return select(func.count()).where(ApiKey.tenant_id == Tenant.id, state).scalar_subquery()

    def count_rows(table: type[Message] | type[MemoryUnit]) -> ScalarSelect[int]:
        # Joined, with the tenant correlated explicitly: under an IN-subquery the automatic
        # correlation would reach only one level up and count every tenant's rows.
        return (
            select(func.count())
            .select_from(table)
            .join(EndUser, EndUser.id == table.user_id)
            .where(EndUser.tenant_id == Tenant.id)
            .correlate(Tenant)
            .scalar_subquery()
        )

    rows = session.execute(
        select(
            Tenant.id,
            Tenant.name,
            Tenant.created_at,
            select(func.count()).where(EndUser.tenant_id == Tenant.id).scalar_subquery(),
            count_keys(False),
            count_keys(True),
            count_rows(Message),
            count_rows(MemoryUnit),
        )
        .where(Tenant.id > after_id)
        .order_by(Tenant.id)
        .limit(limit)
    ).all()
    return [TenantStats(*row) for row in rows]


def users(session: Session, tenant_id: int, *, after_id: int, limit: int) -> list[EndUser]:
    return list(
        session.scalars(
            select(EndUser)
            .where(EndUser.tenant_id == tenant_id, EndUser.id > after_id)
            .order_by(EndUser.id)
            .limit(limit)
        )
    )


@dataclass
class UserStats(store.UserStats):
    vectors: int = 0  # units of any kind with a vector of the serving model
    indexed_vectors: int = 0  # of those, the kinds the FAISS index holds: what it must contain


def user_stats(session: Session, user_ids: list[int], model: str) -> dict[int, UserStats]:
    """store.user_stats of a page of users, with their vectors of the serving model."""
    stats = {uid: UserStats(**vars(s)) for uid, s in store.user_stats(session, user_ids).items()}
    if not user_ids:
        return stats
    with_vector = (MemoryUnit.embed_model == model, MemoryUnit.vector.is_not(None))
    for uid, n in store.count_by_user(session, MemoryUnit.user_id, user_ids, *with_vector).items():
        stats[uid].vectors = n
    indexed = MemoryUnit.kind.in_(store.INDEXED_KINDS)
    for uid, n in store.count_by_user(session, MemoryUnit.user_id, user_ids, *with_vector, indexed).items():
        stats[uid].indexed_vectors = n
    return stats


# --- graph neighbourhood ----------------------------------------------------------------------

NODE_TEXT_CHARS = 200


@dataclass(frozen=True)
class Node:
    id: int
    kind: str
    text: str
    hops: int


@dataclass(frozen=True)
class Neighbourhood:
    nodes: list[Node]
    edges: list[tuple[int, int, str, float]]
    truncated: bool


def neighbourhood(
    session: Session, user_id: int, kind: str, unit_id: int, *, depth: int, limit: int
) -> Neighbourhood:
    """Units within `depth` hops of a unit over the user's links (either direction), nearest first,
    at most `limit` of them (ties broken by id); and every link among them."""
    start = session.scalars(
        select(MemoryUnit.kind).where(MemoryUnit.user_id == user_id, MemoryUnit.id == unit_id)
    ).one_or_none()
    if start != kind:
        raise NotFound(f"memory {kind}-{unit_id} not found")
    hops = {unit_id: 0}
    frontier = {unit_id}
    truncated = False
    for level in range(1, depth + 1):
        if not frontier:
            break
        rows = session.execute(
            select(UnitLink.src_id, UnitLink.dst_id).where(
                UnitLink.user_id == user_id,
                or_(UnitLink.src_id.in_(frontier), UnitLink.dst_id.in_(frontier)),
            )
        ).all()
        reached = sorted({n for pair in rows for n in pair} - hops.keys())
        room = limit - len(hops)
        if len(reached) > room:
            reached, truncated = reached[:room], True
        hops.update(dict.fromkeys(reached, level))
        frontier = set(reached)
        if truncated:
            break
    units = session.execute(
        select(MemoryUnit.id, MemoryUnit.kind, MemoryUnit.text).where(
            MemoryUnit.user_id == user_id, MemoryUnit.id.in_(hops)
        )
    ).all()
    nodes = sorted(
        (Node(uid, k, _shorten(text), hops[uid]) for uid, k, text in units), key=lambda n: (n.hops, n.id)
    )
    edges = session.execute(
        select(UnitLink.src_id, UnitLink.dst_id, UnitLink.relation, UnitLink.weight)
        .where(UnitLink.user_id == user_id, UnitLink.src_id.in_(hops), UnitLink.dst_id.in_(hops))
        .order_by(UnitLink.id)
    ).all()
    return Neighbourhood(nodes, [(s, d, r, w) for s, d, r, w in edges], truncated)


def _shorten(text: str) -> str:
    return text if len(text) <= NODE_TEXT_CHARS else text[: NODE_TEXT_CHARS - 1] + "…"


# --- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRow:
    job: Job
    tenant: str
    user: str
    session: str


def job_cursor(job: Job) -> str:
    """Where the next page (older jobs) starts: the job's creation time in microseconds, and its id."""
    micros = (job.created_at - EPOCH) // timedelta(microseconds=1)
    return f"{micros}_{job.id}"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def jobs(
    session: Session,
    *,
    status: str | None,
    tenant_id: int | None,
    cursor: str | None,
    limit: int,
    job_id: str | None = None,
) -> list[JobRow]:
    """Jobs newest first (by creation time, then id), optionally of one status, tenant or id."""
    query = (
        select(Job, Tenant.name, EndUser.external_id, ChatSession.external_id)
        .join(EndUser, EndUser.id == Job.user_id)
        .join(Tenant, Tenant.id == EndUser.tenant_id)
        .join(ChatSession, ChatSession.id == Job.session_id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    if job_id is not None:
        query = query.where(Job.id == job_id)
    if status is not None:
        query = query.where(Job.status == status)
    if tenant_id is not None:
        query = query.where(EndUser.tenant_id == tenant_id)
    if cursor is not None:
        micros, _, last_id = cursor.partition("_")
        try:
            created = EPOCH + timedelta(microseconds=int(micros))
        except (ValueError, OverflowError):
            created = None
        if created is None or not micros.isdigit() or not last_id:
            raise Invalid(f"not a jobs cursor: {cursor[:60]!r}")
        query = query.where(tuple_(Job.created_at, Job.id) < tuple_(created, last_id))
    return [JobRow(job, t, u, s) for job, t, u, s in session.execute(query).all()]


def failed_job(session: Session, job_id: str) -> tuple[Job, str]:
    """The job (locked until commit, so two retries cannot both pass) and its tenant's name;
    Conflict unless it failed."""
    row = session.execute(
        select(Job, Tenant.name)
        .join(EndUser, EndUser.id == Job.user_id)
        .join(Tenant, Tenant.id == EndUser.tenant_id)
        .where(Job.id == job_id[:36])
        .with_for_update(of=Job)
    ).one_or_none()
    if row is None:
        raise NotFound(f"job {job_id!r} not found")
    job, tenant = row
    if job.status != "failed":
        raise Conflict(f"job {job_id!r} is {job.status}, only a failed job can be retried")
    return job, tenant


# --- keys -------------------------------------------------------------------------------------


def keys(session: Session, *, tenant_id: int | None, after_id: int, limit: int) -> list[tuple[ApiKey, str]]:
    query = (
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id > after_id)
        .order_by(ApiKey.id)
        .limit(limit)
    )
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return [(key, name) for key, name in session.execute(query).all()]


def revoke_key(session: Session, key_id: int) -> tuple[ApiKey, str, bool]:
    """Revoke a key; returns it, its tenant, and whether this call revoked it (False: it already was).

    Revoking again is not an error and keeps the first revocation time.
    """
    row = session.execute(
        select(ApiKey, Tenant.name)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.id == key_id)
        .with_for_update(of=ApiKey)
    ).one_or_none()
    if row is None:
        raise NotFound(f"key {key_id} not found")
    key, tenant = row
    if key.revoked_at is not None:
        return key, tenant, False
    key.revoked_at = session.scalar(
        update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=func.now()).returning(ApiKey.revoked_at)
    )
    return key, tenant, True
