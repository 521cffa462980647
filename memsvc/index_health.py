"""The health of this API process's FAISS index against Postgres, per tenant and per user, and its
rebuild (admin API)."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from memsvc import recall, store
from memsvc.index import VectorIndex
from memsvc.inspection import get_tenant
from memsvc.tables import EndUser, MemoryUnit, Tenant


@dataclass(frozen=True)
class UserHealth:
    """One user's index against Postgres (field names are the admin API's)."""

    user_id: str
    postgres_vectors: int
    faiss_vectors: int
    missing: int  # ids Postgres has that the index lacks
    unexpected: int  # ids the index has that Postgres does not (for this model)
    duplicates: int  # entries beyond one per id
    index_type: str

    @property
    def ok(self) -> bool:
        return self.missing == self.unexpected == self.duplicates == 0


@dataclass(frozen=True)
class TenantHealth:
    tenant: str
    users: int
    postgres_vectors: int
    faiss_vectors: int
    mismatched_users: int

    @property
    def ok(self) -> bool:
        return self.mismatched_users == 0


@dataclass(frozen=True)
class IndexHealth:
    model: str
    dim: int
    index_seq: int
    db_seq: int
    applied: int  # changes the check applied first, to compare at one point of the change log
    tenants: list[TenantHealth]
    orphan_vectors: int  # in the index under users Postgres no longer has
    users: list[UserHealth] | None

    @property
    def ok(self) -> bool:
        users_ok = self.users is None or all(u.ok for u in self.users)
        return (
            self.index_seq == self.db_seq
            and self.orphan_vectors == 0
            and all(t.ok for t in self.tenants)
            and users_ok
        )


def index_health(session: Session, index: VectorIndex, tenant_name: str | None = None) -> IndexHealth:
    """Compare this process's FAISS index with Postgres, per tenant by counts and, for one tenant,
    per user by ids.

    The index is first brought up to the change log in the same REPEATABLE READ snapshot the counts
    are read from, holding the refresh lock, so ordinary lag never reads as damage.
    """
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    tenant = get_tenant(session, tenant_name) if tenant_name is not None else None
    with index.refresh_lock:
        applied = recall.refresh_index(session, index)
        expected = store.vector_counts(session, index.model)
        held = index.counts()
        db_seq = store.last_change_seq(session)
        users_of = {
            uid: (tid, ext)
            for uid, tid, ext in session.execute(select(EndUser.id, EndUser.tenant_id, EndUser.external_id))
        }
        names = dict(session.execute(select(Tenant.id, Tenant.name)).tuples().all())
        per_user = _user_health(session, index, tenant.id, users_of) if tenant is not None else None
    by_tenant: dict[int, list[int]] = {}
    for uid, (tid, _) in users_of.items():
        by_tenant.setdefault(tid, []).append(uid)
    rows = [
        TenantHealth(
            tenant=names[tid],
            users=len(uids),
            postgres_vectors=sum(expected.get(u, 0) for u in uids),
            faiss_vectors=sum(held.get(u, 0) for u in uids),
            mismatched_users=sum(1 for u in uids if expected.get(u, 0) != held.get(u, 0)),
        )
        for tid, uids in sorted(by_tenant.items())
        if tenant is None or tid == tenant.id
    ]
    return IndexHealth(
        model=index.model,
        dim=index.dim,
        index_seq=index.seq,
        db_seq=db_seq,
        applied=applied,
        tenants=rows,
        orphan_vectors=sum(n for uid, n in held.items() if uid not in users_of),
        users=per_user,
    )


def _user_health(
    session: Session, index: VectorIndex, tenant_id: int, users_of: dict[int, tuple[int, str]]
) -> list[UserHealth]:
    uids = sorted(uid for uid, (tid, _) in users_of.items() if tid == tenant_id)
    wanted: dict[int, set[int]] = {uid: set() for uid in uids}
    rows = session.execute(
        select(MemoryUnit.user_id, MemoryUnit.id).where(
            MemoryUnit.user_id.in_(uids),
            MemoryUnit.embed_model == index.model,
            MemoryUnit.vector.is_not(None),
            MemoryUnit.kind.in_(store.INDEXED_KINDS),
        )
    )
    for uid, unit_id in rows:
        wanted[uid].add(unit_id)
    out = []
    for uid in uids:
        held, total = index.ids(uid), index.count(uid)
        out.append(
            UserHealth(
                user_id=users_of[uid][1],
                postgres_vectors=len(wanted[uid]),
                faiss_vectors=total,
                missing=len(wanted[uid] - held),
                unexpected=len(held - wanted[uid]),
                duplicates=total - len(held),
                index_type=index.index_type(uid),
            )
        )
    return out


def rebuild_index(session: Session, index: VectorIndex) -> tuple[int, int]:
    """Rebuild this process's index from one snapshot of Postgres and save it; (vectors, users).

    The new index is built beside the live one (memory for both, meanwhile) and swapped in.
    """
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    with index.refresh_lock:
        recall.rebuild_index(session, index)
        index.save()
        return index.count(), len(index.counts())
