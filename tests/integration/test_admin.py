"""The admin API (/v1/admin): tenants, users, memories, graph, jobs, index health and rebuild,
re-embedding, keys and the audit log; admin key only, every change audited."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from factories import (
    ADMIN_KEY,
    auth,
    cited,
    drain,
    ingest,
    make_settings,
    make_tenant_key,
    message,
    search,
    unique,
    user_row_id,
)
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from memsvc import construct, reembed, store
from memsvc.embed import resolve_model
from memsvc.index import VectorIndex
from memsvc.settings import Settings
from memsvc.state import AppState

ADMIN = auth(ADMIN_KEY)

FACTS = [
    "I adopted a greyhound named Comet from the shelter on Saturday.",
    "My sister Rosa moved to Lisbon to work as an architect.",
    "I started pottery classes at the community studio downtown.",
    "Comet loves running on the beach near Lisbon with Rosa.",
]


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.memsvc  # type: ignore[attr-defined]  # set by the lifespan
    return state


def get(client: TestClient, path: str, **params: Any) -> Any:
    r = client.get(path, params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    return r.json()


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def all_pages(client: TestClient, path: str, limit: int, items: str = "items", **params: Any) -> list[Any]:
    """Every item of a paged list, checking each page keeps to the limit."""
    found: list[Any] = []
    cursor = None
    for _ in range(1000):
        page = get(client, path, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page[items]) <= limit
        found += page[items]
        cursor = page["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("paging never ended")


def audit_entries(client: TestClient, tenant: str | None = None) -> list[dict[str, Any]]:
    return get(client, "/v1/admin/audit", limit=500, **({"tenant": tenant} if tenant else {}))["items"]


@dataclass
class World:
    tenant: str
    key: str
    users: list[str]
    uids: list[int]


@pytest.fixture
def world(client: TestClient, engine: Engine, settings: Settings, database_url: str) -> Callable[..., World]:
    """Factory: a fresh tenant whose users have built memory (one session each, the facts)."""

    def make(users: int = 1, facts: list[str] = FACTS) -> World:
        tenant = unique("adm")
        key = make_tenant_key(client, tenant)
        names = [unique("u") for _ in range(users)]
        for name in names:
            ingest(client, key, name, "s1", [message(f"m{i}", f) for i, f in enumerate(facts)])
        drain(settings, database_url)
        with engine.connect() as conn:
            uids = [user_row_id(conn, key, n) for n in names]
        assert all(u is not None for u in uids)
        return World(tenant, key, names, [int(u) for u in uids if u is not None])

    return make


# --- access -----------------------------------------------------------------------------------

JOB = "00000000-0000-0000-0000-000000000000"
ADMIN_ROUTES = [
    ("GET", "/v1/admin/tenants", None),
    ("GET", "/v1/admin/tenants/acme/users", None),
    ("GET", "/v1/admin/tenants/acme/users/u1/memories", None),
    ("GET", "/v1/admin/tenants/acme/users/u1/memories/edu-1", None),
    ("GET", "/v1/admin/tenants/acme/users/u1/graph?node=edu-1", None),
    ("GET", "/v1/admin/jobs", None),
    ("POST", f"/v1/admin/jobs/{JOB}/retry", None),
    ("GET", "/v1/admin/index", None),
    ("POST", "/v1/admin/index/rebuild", None),
    ("POST", "/v1/admin/tenants/acme/reembed", {}),
    ("GET", "/v1/admin/tenants/acme/reembed", None),
    ("GET", "/v1/admin/keys", None),
    ("DELETE", "/v1/admin/keys/1", None),
    ("GET", "/v1/admin/audit", None),
    ("POST", "/v1/admin/keys", {"tenant": "acme"}),
]


@pytest.mark.parametrize("method,path,body", ADMIN_ROUTES, ids=[f"{m} {p}" for m, p, _ in ADMIN_ROUTES])
def test_a_tenant_key_gets_403_on_every_admin_route_and_changes_nothing(
    client: TestClient, engine: Engine, method: str, path: str, body: Any
) -> None:
    key = make_tenant_key(client)
    before = scalar(engine, "SELECT count(*) FROM audit_entry")
    revoked = scalar(engine, "SELECT count(*) FROM api_key WHERE revoked_at IS NOT NULL")
    r = client.request(method, path, json=body, headers=auth(key))
    assert r.status_code == 403 and r.json()["error"] == "admin key required"
    assert scalar(engine, "SELECT count(*) FROM audit_entry") == before
    assert scalar(engine, "SELECT count(*) FROM api_key WHERE revoked_at IS NOT NULL") == revoked


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/admin/tenants/{nobody}/users"),
        ("GET", "/v1/admin/tenants/{nobody}/users/u1/memories"),
        ("GET", "/v1/admin/tenants/{tenant}/users/{nobody}/memories"),
        ("GET", "/v1/admin/tenants/{tenant}/users/{nobody}/memories/edu-1"),
        ("GET", "/v1/admin/tenants/{tenant}/users/{user}/memories/edu-999999999"),
        ("GET", "/v1/admin/tenants/{tenant}/users/{nobody}/graph?node=edu-1"),
        ("GET", "/v1/admin/tenants/{tenant}/users/{user}/graph?node=edu-999999999"),
        ("GET", "/v1/admin/jobs?tenant={nobody}"),
        ("POST", f"/v1/admin/jobs/{JOB}/retry"),
        ("GET", "/v1/admin/index?tenant={nobody}"),
        ("POST", "/v1/admin/tenants/{nobody}/reembed"),
        ("GET", "/v1/admin/tenants/{nobody}/reembed"),
        ("GET", "/v1/admin/keys?tenant={nobody}"),
        ("DELETE", "/v1/admin/keys/999999999"),
    ],
)
def test_unknown_tenants_users_memories_jobs_and_keys_are_404(
    client: TestClient, engine: Engine, world: Callable[..., World], method: str, path: str
) -> None:
    w = world(facts=FACTS[:1])
    before = scalar(engine, "SELECT count(*) FROM audit_entry")
    url = path.format(nobody=unique("nobody"), tenant=w.tenant, user=w.users[0])
    r = client.request(method, url, headers=ADMIN)
    assert r.status_code == 404, r.text
    assert "not found" in r.json()["error"]
    assert scalar(engine, "SELECT count(*) FROM audit_entry") == before


def test_a_user_of_another_tenant_is_404_under_this_tenant(
    client: TestClient, world: Callable[..., World]
) -> None:
    a, b = world(facts=FACTS[:1]), world(facts=FACTS[:1])
    r = client.get(f"/v1/admin/tenants/{a.tenant}/users/{b.users[0]}/memories", headers=ADMIN)
    assert r.status_code == 404


# --- tenants and users ------------------------------------------------------------------------


def test_tenants_are_listed_with_their_counts_a_page_at_a_time(
    client: TestClient, engine: Engine, world: Callable[..., World]
) -> None:
    w = world(users=2)
    make_tenant_key(client, w.tenant)  # a second key, revoked below
    keys = get(client, "/v1/admin/keys", tenant=w.tenant)["items"]
    assert client.delete(f"/v1/admin/keys/{keys[-1]['id']}", headers=ADMIN).status_code == 200

    tenants = all_pages(client, "/v1/admin/tenants", limit=3)
    names = [t["name"] for t in tenants]
    assert len(names) == len(set(names)) == scalar(engine, "SELECT count(*) FROM tenant")
    (mine,) = [t for t in tenants if t["name"] == w.tenant]
    units = scalar(engine, "SELECT count(*) FROM memory_unit WHERE user_id = ANY(:u)", u=w.uids)
    assert mine["users"] == 2 and mine["messages"] == 2 * len(FACTS)
    assert mine["keys_active"] == 1 and mine["keys_revoked"] == 1
    assert mine["units"] == units > 2 * len(FACTS)


def test_users_of_a_tenant_with_statistics_a_page_at_a_time(
    client: TestClient, engine: Engine, world: Callable[..., World]
) -> None:
    w = world(users=3)
    state = app_state(client)
    users = all_pages(client, f"/v1/admin/tenants/{w.tenant}/users", limit=2)
    assert [u["id"] for u in users] == w.users  # id order: the order they were created
    for user, uid in zip(users, w.uids, strict=True):

        def count(kind: str, uid: int = uid) -> int:
            sql = "SELECT count(*) FROM memory_unit WHERE user_id = :u AND kind = :k"
            return int(scalar(engine, sql, u=uid, k=kind))

        assert user["messages"] == len(FACTS) and user["sessions"] == 1
        assert user["message_units"] == count("message") == len(FACTS)
        assert (user["edus"], user["episodes"], user["notes"], user["entities"]) == (
            count("edu"),
            count("episode"),
            count("note"),
            count("entity"),
        )
        assert user["edus"] > 0 and user["entities"] > 0 and user["episodes"] > 0
        assert user["edges"] == scalar(engine, "SELECT count(*) FROM unit_link WHERE user_id = :u", u=uid) > 0
        with_vector = scalar(
            engine, "SELECT count(*) FROM memory_unit WHERE user_id = :u AND vector IS NOT NULL", u=uid
        )
        assert user["vectors"] == with_vector
        assert user["indexed_vectors"] == with_vector - user["entities"]  # entities stay out of FAISS
        assert user["index_size"] == user["indexed_vectors"] == state.index.count(uid)
        assert user["index_type"] == "Flat"


# --- memories and graph -----------------------------------------------------------------------


def test_admin_browses_any_users_memories_back_to_the_raw_messages(
    client: TestClient, world: Callable[..., World]
) -> None:
    w = world()
    base = f"/v1/admin/tenants/{w.tenant}/users/{w.users[0]}/memories"
    edus = all_pages(client, base, limit=2, items="memories", kind="edu")
    assert edus and all(m["kind"] == "edu" for m in edus)
    # The same as the tenant sees through its own key.
    own = client.get(f"/v1/users/{w.users[0]}/memories", params={"kind": "edu"}, headers=auth(w.key))
    assert own.status_code == 200 and own.json()["memories"] == edus

    comet = next(m for m in edus if "Comet" in m["text"] and "greyhound" in m["text"])
    detail = get(client, f"{base}/{comet['id']}")
    assert detail["id"] == comet["id"] and detail["source_message_ids"] == ["m0"]
    assert [s["content"] for s in detail["sources"]] == [FACTS[0]]
    assert detail["links"] and all(link["other"]["id"] for link in detail["links"])


def test_graph_neighbourhood_grows_with_depth_and_is_capped(
    client: TestClient, engine: Engine, world: Callable[..., World]
) -> None:
    w = world()
    uid = w.uids[0]
    base = f"/v1/admin/tenants/{w.tenant}/users/{w.users[0]}/graph"
    edu = scalar(
        engine,
        "SELECT min(src_id) FROM unit_link l JOIN memory_unit u ON u.id = l.src_id "
        "WHERE l.user_id = :u AND u.kind = 'edu'",
        u=uid,
    )
    with engine.connect() as conn:
        links = conn.execute(
            text("SELECT src_id, dst_id, relation FROM unit_link WHERE user_id = :u"), {"u": uid}
        ).all()
    neighbours = {d for s, d, _ in links if s == edu} | {s for s, d, _ in links if d == edu}

    one = get(client, base, node=f"edu-{edu}", depth=1, limit=500)
    ids = {int(n["id"].split("-")[1]): n for n in one["nodes"]}
    assert ids.keys() == neighbours | {edu} and not one["truncated"]
    assert one["nodes"][0] == {**one["nodes"][0], "id": f"edu-{edu}", "hops": 0}
    assert all(n["hops"] == 1 for i, n in ids.items() if i != edu)
    expected_edges = {(s, d, r) for s, d, r in links if s in ids and d in ids}
    got = {(int(e["src"].split("-")[1]), int(e["dst"].split("-")[1]), e["relation"]) for e in one["edges"]}
    assert got == expected_edges and expected_edges

    two = get(client, base, node=f"edu-{edu}", depth=2, limit=500)
    assert {n["id"] for n in one["nodes"]} < {n["id"] for n in two["nodes"]}
    assert max(n["hops"] for n in two["nodes"]) == 2

    capped = get(client, base, node=f"edu-{edu}", depth=2, limit=2)
    assert capped["truncated"] and len(capped["nodes"]) == 2 and capped["nodes"][0]["hops"] == 0

    for bad in ({"node": "edu-x"}, {"node": f"edu-{edu}", "depth": 4}, {"node": f"edu-{edu}", "limit": 0}):
        r = client.get(base, params=bad, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]
    wrong_kind = client.get(base, params={"node": f"note-{edu}"}, headers=ADMIN)
    assert wrong_kind.status_code == 404


# --- jobs -------------------------------------------------------------------------------------


def test_jobs_are_listed_newest_first_a_page_at_a_time(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    tenant = unique("adm")
    key, user = make_tenant_key(client, tenant), unique("u")
    ids = [ingest(client, key, user, f"s{i}", [message(f"j{i}", FACTS[i])])["job_id"] for i in range(3)]
    queued = get(client, "/v1/admin/jobs", tenant=tenant, status="queued")["items"]
    assert [j["id"] for j in queued] == ids[::-1]
    drain(settings, database_url)

    jobs = all_pages(client, "/v1/admin/jobs", limit=1, tenant=tenant)
    assert [j["id"] for j in jobs] == ids[::-1]
    assert all(j["status"] == "done" and j["attempts"] == 1 and j["error"] is None for j in jobs)
    assert {(j["tenant"], j["user_id"]) for j in jobs} == {(tenant, user)}
    assert [j["session_id"] for j in jobs] == ["s2", "s1", "s0"]
    assert get(client, "/v1/admin/jobs", tenant=tenant, status="queued")["items"] == []
    for bad in ("not-a-cursor", "999999999999999999_x", "-5_x"):
        r = client.get("/v1/admin/jobs", params={"cursor": bad}, headers=ADMIN)
        assert r.status_code == 422 and "cursor" in r.json()["error"]


def test_a_failed_job_is_retried_by_the_admin_and_ends_done(
    client: TestClient, engine: Engine, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = unique("adm")
    key, user = make_tenant_key(client, tenant), unique("u")
    job_id = ingest(client, key, user, "s1", [message("f1", "I keep bees in my garden.")])["job_id"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    # The fault inside a real build (which counts its attempts), after the job is marked running.
    monkeypatch.setattr(construct, "distill_notes", broken)
    once = make_settings(database_url, job_max_attempts=1)
    drain(once, database_url)
    r = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 409 and "queued" in r.json()["error"]  # waiting for its own retry
    time.sleep(2.5)  # the automatic retry comes 2 s later, and fails too
    drain(once, database_url)
    monkeypatch.undo()
    (failed,) = get(client, "/v1/admin/jobs", tenant=tenant, status="failed")["items"]
    assert failed["id"] == job_id and failed["error"] == "RuntimeError: disk on fire"
    assert failed["attempts"] == 2

    assert client.post(f"/v1/admin/jobs/{job_id}/retry", headers=auth(key)).status_code == 403
    r = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=ADMIN)
    assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["error"] is None
    again = client.post(f"/v1/admin/jobs/{job_id}/retry", headers=ADMIN)
    assert again.status_code == 409  # queued now: one retry is enough
    drain(settings, database_url)

    (done,) = get(client, "/v1/admin/jobs", tenant=tenant)["items"]
    assert done["status"] == "done" and done["attempts"] == 3
    assert "f1" in cited(search(client, key, user, "What does the user keep in the garden?"))
    assert client.post(f"/v1/admin/jobs/{job_id}/retry", headers=ADMIN).status_code == 409
    (entry,) = [e for e in audit_entries(client, tenant) if e["action"] == "retry_job"]
    assert entry["target"] == f"job {job_id}" and entry["actor"] == "admin"


# --- index health and rebuild -----------------------------------------------------------------


def health(client: TestClient, tenant: str | None = None) -> Any:
    return get(client, "/v1/admin/index", **({"tenant": tenant} if tenant else {}))


def test_index_health_sees_damage_and_a_rebuild_repairs_it(
    client: TestClient, engine: Engine, settings: Settings, world: Callable[..., World]
) -> None:
    w = world(users=2)
    state = app_state(client)
    uid, other = w.uids
    fine = health(client, w.tenant)
    assert fine["ok"] and fine["model"] == settings.embed_model and fine["dim"] == 384
    assert fine["index_seq"] == fine["db_seq"] == scalar(engine, "SELECT max(seq) FROM index_change")
    (row,) = fine["tenants"]
    assert row["tenant"] == w.tenant and row["users"] == 2 and row["ok"]
    assert (
        row["postgres_vectors"] == row["faiss_vectors"] == state.index.count(uid) + state.index.count(other)
    )
    assert {u["user_id"] for u in fine["users"]} == set(w.users)
    assert all(u["ok"] and u["index_type"] == "Flat" and u["missing"] == 0 for u in fine["users"])

    # Damage this process's index behind Postgres's back: two vectors lost, one stray id added.
    lost = sorted(state.index.ids(uid))[:2]
    state.index.remove(uid, lost)
    state.index.add(other, np.array([987_654_321]), np.ones((1, state.index.dim), np.float32))
    damaged = health(client, w.tenant)
    assert not damaged["ok"] and not damaged["tenants"][0]["ok"]
    assert damaged["tenants"][0]["mismatched_users"] == 2
    by_user = {u["user_id"]: u for u in damaged["users"]}
    assert by_user[w.users[0]]["missing"] == 2 and not by_user[w.users[0]]["ok"]
    assert by_user[w.users[1]]["unexpected"] == 1 and not by_user[w.users[1]]["ok"]
    assert not health(client)["ok"]  # the overview says so too

    assert client.post("/v1/admin/index/rebuild", headers=auth(w.key)).status_code == 403
    r = client.post("/v1/admin/index/rebuild", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["vectors"] == state.index.count() and r.json()["model"] == settings.embed_model
    repaired = health(client)
    assert repaired["ok"] and repaired["postgres_vectors"] == repaired["faiss_vectors"]
    assert repaired["orphan_vectors"] == 0 and all(t["ok"] for t in repaired["tenants"])
    assert health(client, w.tenant)["ok"] and set(lost) <= state.index.ids(uid)
    assert 987_654_321 not in state.index.ids(other)

    # What was saved loads back as the same index.
    on_disk = VectorIndex(state.index.model, state.index.dim, settings.index_dir)
    assert on_disk.load() and on_disk.counts() == state.index.counts()
    entry = audit_entries(client)[0]
    assert entry["action"] == "rebuild_index" and entry["counts"]["vectors"] == r.json()["vectors"]


# --- re-embedding -----------------------------------------------------------------------------


def test_reembed_converts_a_tenant_in_batches_and_resumes_after_a_crash(
    client: TestClient,
    engine: Engine,
    settings: Settings,
    database_url: str,
    world: Callable[..., World],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, bystander = world(users=2), world()
    uids = w.uids
    state = app_state(client)
    total = scalar(
        engine, "SELECT count(*) FROM memory_unit WHERE user_id = ANY(:u) AND vector IS NOT NULL", u=uids
    )
    # Simulate memory embedded by an older model: other name, and vectors that are not this model's.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE memory_unit SET embed_model = 'old-model', "
                "vector = decode(repeat('00', 1536), 'hex') WHERE user_id = ANY(:u) AND vector IS NOT NULL"
            ),
            {"u": uids},
        )
    # An API process started with the new model holds none of the old vectors.
    assert client.post("/v1/admin/index/rebuild", headers=ADMIN).status_code == 200
    assert health(client, w.tenant)["tenants"][0]["faiss_vectors"] == 0
    progress = get(client, f"/v1/admin/tenants/{w.tenant}/reembed")
    assert (progress["done"], progress["remaining"], progress["model"]) == (0, total, settings.embed_model)
    assert get(client, f"/v1/admin/tenants/{bystander.tenant}/reembed")["remaining"] == 0

    # The first run dies after its first batch is committed.
    batches: list[int] = []
    real_batch = reembed.reembed_batch

    def dies_after_one(*args: Any, **kwargs: Any) -> int:
        if batches:
            raise RuntimeError("worker killed")
        batches.append(real_batch(*args, **kwargs))
        return batches[-1]

    monkeypatch.setattr(reembed, "reembed_batch", dies_after_one)
    r = client.post(f"/v1/admin/tenants/{w.tenant}/reembed", json={"batch_size": 5}, headers=ADMIN)
    assert r.status_code == 202, r.text
    assert r.json()["job_status"] == "todo" and r.json()["remaining"] == total
    with engine.connect() as conn:
        lock = conn.execute(
            text("SELECT lock FROM procrastinate_jobs WHERE id = :i"), {"i": r.json()["job_id"]}
        ).scalar_one()
    tenant_id = scalar(engine, "SELECT id FROM tenant WHERE name = :n", n=w.tenant)
    assert lock == f"reembed-tenant-{tenant_id}"  # one re-embed of a tenant runs at a time
    drain(settings, database_url)
    monkeypatch.undo()
    half = get(client, f"/v1/admin/tenants/{w.tenant}/reembed")
    assert (half["done"], half["remaining"]) == (5, total - 5)
    assert half["job_status"] == "todo"  # waiting for its retry
    assert health(client, w.tenant)["ok"]  # the index holds exactly what is converted so far

    time.sleep(2.5)  # the retry comes 2 s later and walks only what is left
    drain(settings, database_url)
    finished = get(client, f"/v1/admin/tenants/{w.tenant}/reembed")
    assert (finished["done"], finished["remaining"], finished["job_id"]) == (total, 0, None)

    report = health(client, w.tenant)
    assert report["ok"] and all(u["duplicates"] == 0 and u["ok"] for u in report["users"])
    indexed = scalar(
        engine,
        "SELECT count(*) FROM memory_unit WHERE user_id = ANY(:u) AND vector IS NOT NULL "
        "AND kind <> 'entity'",
        u=uids,
    )
    assert report["tenants"][0]["faiss_vectors"] == indexed
    # Real vectors of this model again, not just a new label: each matches a fresh encoding.
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT text, vector FROM memory_unit WHERE user_id = ANY(:u) AND vector IS NOT NULL"),
            {"u": uids},
        ).all()
    fresh = state.embedder.encode([t for t, _ in rows])
    similarity = [float(store.from_blob(v) @ f) for (_, v), f in zip(rows, fresh, strict=True)]
    assert min(similarity) > 0.999
    assert "m1" in cited(search(client, w.key, w.users[0], "Where did Rosa move?", mode="fast"))

    (entry,) = [e for e in audit_entries(client, w.tenant) if e["action"] == "reembed_tenant"]
    assert entry["counts"]["remaining"] == total and entry["counts"]["batch_size"] == 5

    # A second run has nothing left to do and adds no index change.
    seq = scalar(engine, "SELECT max(seq) FROM index_change")
    assert client.post(f"/v1/admin/tenants/{w.tenant}/reembed", headers=ADMIN).status_code == 202
    drain(settings, database_url)
    assert scalar(engine, "SELECT max(seq) FROM index_change") == seq


def test_reembed_to_another_model_takes_the_units_out_of_this_models_index_and_back(
    client: TestClient, engine: Engine, settings: Settings, database_url: str, world: Callable[..., World]
) -> None:
    w = world()
    # The bundled weights named by their path: to memsvc (which goes by the name) another model.
    other = resolve_model(settings.embed_model)
    assert other != settings.embed_model
    total = scalar(
        engine, "SELECT count(*) FROM memory_unit WHERE user_id = :u AND vector IS NOT NULL", u=w.uids[0]
    )
    before = health(client, w.tenant)["tenants"][0]
    assert before["faiss_vectors"] == before["postgres_vectors"] > 0

    audited = len(audit_entries(client, w.tenant))
    for bad in ({"batch_size": 0}, {"model": ""}, {"modle": other}):
        r = client.post(f"/v1/admin/tenants/{w.tenant}/reembed", json=bad, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]
    assert len(audit_entries(client, w.tenant)) == audited  # refused input writes nothing
    r = client.post(f"/v1/admin/tenants/{w.tenant}/reembed", json={"model": other}, headers=ADMIN)
    assert r.status_code == 202 and r.json()["model"] == other
    drain(settings, database_url)
    progress = get(client, f"/v1/admin/tenants/{w.tenant}/reembed", model=other)
    assert (progress["done"], progress["remaining"]) == (total, 0)
    # This API process serves the configured model: the units left its index (none twice, none stale).
    moved = health(client, w.tenant)
    assert (
        moved["ok"] and moved["tenants"][0]["faiss_vectors"] == moved["tenants"][0]["postgres_vectors"] == 0
    )

    assert client.post(f"/v1/admin/tenants/{w.tenant}/reembed", headers=ADMIN).status_code == 202
    drain(settings, database_url)
    back = health(client, w.tenant)
    assert back["ok"] and back["tenants"][0]["faiss_vectors"] == before["faiss_vectors"]
    assert "m2" in cited(search(client, w.key, w.users[0], "pottery classes", mode="fast"))


# --- keys and audit ---------------------------------------------------------------------------


def test_keys_are_listed_without_secrets_and_revocation_takes_effect_at_once(
    client: TestClient, engine: Engine, world: Callable[..., World]
) -> None:
    w = world(facts=FACTS[:1])
    second = make_tenant_key(client, w.tenant)
    keys = all_pages(client, "/v1/admin/keys", limit=1, tenant=w.tenant)
    assert [k["prefix"] for k in keys] == [w.key[:10], second[:10]]
    assert all(set(k) == {"id", "tenant", "name", "prefix", "created_at", "revoked_at"} for k in keys)
    assert all(k["tenant"] == w.tenant and k["revoked_at"] is None for k in keys)
    everyone = get(client, "/v1/admin/keys", limit=500)["items"]
    assert len({k["tenant"] for k in everyone}) > 1

    search_path = f"/v1/users/{w.users[0]}/search"
    assert client.post(search_path, json={"query": "dog"}, headers=auth(w.key)).status_code == 200
    r = client.delete(f"/v1/admin/keys/{keys[0]['id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    refused = client.post(search_path, json={"query": "dog"}, headers=auth(w.key))
    assert refused.status_code == 401 and refused.json()["error"] == "unknown or revoked key"
    assert client.post(search_path, json={"query": "dog"}, headers=auth(second)).status_code == 200

    # Revoking again is fine: same answer, the first revocation time, no second audit entry.
    for absurd in ("99999999999999999999", "0", "x"):  # never sent to Postgres
        assert client.delete(f"/v1/admin/keys/{absurd}", headers=ADMIN).status_code == 422
    big = client.get("/v1/admin/keys", params={"cursor": "99999999999999999999"}, headers=ADMIN)
    assert big.status_code == 422
    again = client.delete(f"/v1/admin/keys/{keys[0]['id']}", headers=ADMIN)
    assert again.status_code == 200 and again.json() == r.json()
    revocations = [e for e in audit_entries(client, w.tenant) if e["action"] == "revoke_key"]
    assert [e["target"] for e in revocations] == [f"key {keys[0]['id']} ({w.key[:10]})"]
    assert scalar(engine, "SELECT revoked_at IS NOT NULL FROM api_key WHERE id = :i", i=keys[0]["id"])


def test_audit_log_records_erasures_and_admin_actions_newest_first(
    client: TestClient, world: Callable[..., World]
) -> None:
    w = world(users=2, facts=FACTS[:2])
    key_id = get(client, "/v1/admin/keys", tenant=w.tenant)["items"][0]["id"]
    assert client.delete(f"/v1/users/{w.users[0]}", headers=auth(w.key)).status_code == 204

    entries = all_pages(client, "/v1/admin/audit", limit=1, tenant=w.tenant)
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    assert [e["action"] for e in entries] == ["erase_user", "create_key"]
    erased = entries[0]
    assert erased["tenant"] == w.tenant and erased["target"] == f"user {w.users[0]}"
    assert erased["actor"] == f"key {key_id} ({w.key[:10]})"  # which key, never the secret
    assert erased["counts"]["messages"] == 2 and erased["counts"]["units"] > 2
    assert entries[1]["actor"] == "admin" and entries[1]["target"] == f"key {key_id} ({w.key[:10]})"
    assert all(w.key not in str(e) for e in audit_entries(client))
    assert get(client, "/v1/admin/audit", tenant=unique("gone"))["items"] == []
