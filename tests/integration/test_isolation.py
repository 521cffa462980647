"""Tenant isolation as a property: whatever user, memory and job ids a tenant's key names, on every
tenant route of the OpenAPI schema, it reaches only its own tenant's memory. Another tenant's user,
memory or job is answered exactly as one that never existed, and nothing of it leaks."""

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from factories import auth, drain, ingest, make_tenant_key, message, search, unique
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memsvc.settings import Settings

# Routes that create the named user in the caller's own tenant (user ids are per tenant), so for
# them "another tenant's user" does not exist by design; they are checked separately below.
CREATING = {
    ("post", "/v1/users/{user_id}/sessions/{session_id}/messages"),
    ("post", "/v1/users/{user_id}/import"),
}
BODIES: dict[tuple[str, str], Any] = {
    ("post", "/v1/users/{user_id}/search"): {"query": "what does the zebra keeper know", "mode": "deep"},
    ("patch", "/v1/users/{user_id}/memories/{memory_id}"): {"text": "A corrected statement."},
}


@dataclass(frozen=True)
class World:
    victim_key: str
    victim_users: list[str]
    victim_memories: list[str]
    victim_jobs: list[str]
    secret: str  # a word only the victim tenant's memory holds
    caller_key: str
    caller_user: str


@pytest.fixture(scope="module")
def world(client: TestClient, settings: Settings, database_url: str) -> World:
    secret = f"zebra{uuid.uuid4().hex[:8]}"
    victim_key, caller_key = make_tenant_key(client), make_tenant_key(client)
    users, jobs = [unique("v"), unique("v")], []
    for i, user in enumerate(users):
        said = f"My zebra keeper code word is {secret}, and I live in Lisbon {i}."
        jobs.append(ingest(client, victim_key, user, "s1", [message(f"m{i}", said)])["job_id"])
    caller_user = unique("c")
    ingest(client, caller_key, caller_user, "s1", [message("c1", "I keep bees in my garden.")])
    drain(settings, database_url)
    r = client.get(f"/v1/users/{users[0]}/memories", params={"limit": 500}, headers=auth(victim_key))
    assert r.status_code == 200, r.text
    memories = [m["id"] for m in r.json()["memories"]]
    assert memories and any(secret in h["text"] for h in search(client, victim_key, users[0], secret))
    return World(victim_key, users, memories, jobs, secret, caller_key, caller_user)


def tenant_operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    return sorted(
        (method, path)
        for path, ops in paths.items()
        if path.startswith("/v1/") and not path.startswith("/v1/admin")
        for method in ops
        if (method, path) not in CREATING
    )


def call(client: TestClient, key: str, method: str, path: str, ids: dict[str, str]) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda m: quote(ids[m.group(1)], safe=""), path)
    body = BODIES.get((method, path))
    if method == "post" and body is None and path.endswith("/feedback"):
        body = {"used": [ids["memory_id"]] if re.fullmatch(r"[a-z]+-\d+", ids["memory_id"]) else []}
    return client.request(method.upper(), url, json=body, headers=auth(key))


ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40)


def test_every_tenant_route_is_covered(client: TestClient) -> None:
    operations = tenant_operations(client)
    assert len(operations) >= 10, operations  # memory management, search, feedback, jobs, erasure...
    assert ("get", "/v1/users/{user_id}/export") in operations


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_another_tenants_ids_are_answered_as_if_they_did_not_exist(
    client: TestClient, world: World, data: st.DataObject
) -> None:
    method, path = data.draw(st.sampled_from(tenant_operations(client)), label="operation")
    theirs = {
        "user_id": data.draw(
            st.sampled_from(world.victim_users) | ids.filter(lambda u: u != world.caller_user)
        ),
        "session_id": "s1",
        "memory_id": data.draw(st.sampled_from(world.victim_memories) | ids),
        "job_id": data.draw(st.sampled_from(world.victim_jobs) | ids),
    }
    answer = call(client, world.caller_key, method, path, theirs)
    assert answer.status_code in (404, 422), (method, path, theirs, answer.status_code, answer.text)
    assert world.secret not in answer.text
    assert isinstance(answer.json()["error"], str)

    # The same request with the victim's ids swapped for ids of the same shape that exist nowhere
    # gets the same answer.
    nowhere = dict(theirs)
    if theirs["user_id"] in world.victim_users:
        nowhere["user_id"] = unique("v")
    if theirs["memory_id"] in world.victim_memories:
        nowhere["memory_id"] = theirs["memory_id"].split("-")[0] + "-999999999"
    if theirs["job_id"] in world.victim_jobs:
        nowhere["job_id"] = str(uuid.uuid4())
    baseline = call(client, world.caller_key, method, path, nowhere)
    assert baseline.status_code == answer.status_code, (method, path, theirs, answer.text, baseline.text)


def test_writes_to_a_taken_user_id_stay_in_the_callers_tenant(
    client: TestClient, world: World, settings: Settings, database_url: str
) -> None:
    victim = world.victim_users[0]
    # The caller ingests under the victim's user id: that is a user of the caller's own tenant.
    ingest(client, world.caller_key, victim, "s1", [message("x1", "My favourite colour is teal.")])
    drain(settings, database_url)
    mine = search(client, world.caller_key, victim, world.secret)
    assert mine and all(world.secret not in h["text"] for h in mine)
    assert client.get(f"/v1/users/{victim}", headers=auth(world.caller_key)).json()["messages"] == 1
    # ... and the victim's own user is untouched by everything the property test tried.
    r = client.get(f"/v1/users/{victim}", headers=auth(world.victim_key))
    assert r.status_code == 200 and r.json()["messages"] == 1
    assert any(world.secret in h["text"] for h in search(client, world.victim_key, victim, world.secret))
    after = client.get(f"/v1/users/{victim}/memories", params={"limit": 500}, headers=auth(world.victim_key))
    assert sorted(m["id"] for m in after.json()["memories"]) == sorted(world.victim_memories)
