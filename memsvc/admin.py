"""Admin routes (/v1/admin): only the admin key may call them."""

from fastapi import APIRouter, Depends

from memsvc import store
from memsvc.api import Caller, CallerDep, StateDep
from memsvc.db import transaction
from memsvc.errors import Forbidden
from memsvc.schemas import KeyCreate, KeyCreated


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise Forbidden("admin key required")
    return caller


router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, state: StateDep) -> KeyCreated:
    """A new tenant key (the tenant is created on first use). The secret is shown only here."""
    with transaction(state.factory) as session:
        key, secret = store.create_key(session, body.tenant, body.name)
    return KeyCreated(id=key.id, tenant=body.tenant, name=key.name, key=secret)
