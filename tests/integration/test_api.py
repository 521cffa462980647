"""The HTTP contract in process: ingest, jobs, duplicates, auth, tenants, bad input, search, erasure."""

from typing import Any

import pytest
from factories import (
    ADMIN_KEY,
    MAX_BODY_BYTES,
    auth,
    cited,
    drain,
    ingest,
    job_status,
    make_tenant_key,
    message,
    search,
    unique,
    user_row_id,
)
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from memsvc import recall, store
from memsvc.index import VectorIndex
from memsvc.settings import Settings
from memsvc.state import AppState
from memsvc.tables import Base

SUPPORT_GROUP = "I went to a LGBTQ support group yesterday and it was so powerful."
ADOPTION = "We are thinking about adopting a child next year, I researched agencies."
PAINTING = "I painted a sunrise over the lake last weekend, with lots of orange."


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.memsvc  # type: ignore[attr-defined]  # set by the lifespan
    return state


def index_count(client: TestClient, user_id: int) -> int:
    """Vectors of this user in the API process's FAISS index, after catching up with Postgres."""
    state = app_state(client)
    with state.factory() as session:
        recall.refresh_index(session, state.index)
    return state.index.count(user_id)


def postgres_vector_count(client: TestClient, user_id: int) -> int:
    """Vectors of this user Postgres says the index must hold."""
    state = app_state(client)
    with state.factory() as session:
        return store.vector_counts(session, state.index.model).get(user_id, 0)


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def uid_of(engine: Engine, key: str, user: str) -> int | None:
    with engine.connect() as conn:
        return user_row_id(conn, key, user)


# --- ingest, jobs, search ---------------------------------------------------------------------


def test_ingested_message_is_found_with_its_client_id(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    answer = ingest(
        client,
        key,
        user,
        "session-1",
        [message("D1:3", SUPPORT_GROUP), message("D1:4", ADOPTION, speaker="Melanie")],
    )
    assert answer["accepted"] == 2 and answer["duplicates"] == 0
    assert job_status(client, key, answer["job_id"])["status"] == "queued"

    drain(settings, database_url)

    job = job_status(client, key, answer["job_id"])
    assert job["status"] == "done" and job["error"] is None
    hits = search(client, key, user, "When did Caroline go to the LGBTQ support group?")
    supporting = [h for h in hits if "D1:3" in h["source_message_ids"]]
    assert supporting, hits
    assert supporting[0]["session_id"] == "session-1"
    assert hits.index(supporting[0]) == 0 or supporting[0]["score"] >= hits[0]["score"] - 0.2
    body = client.post(
        f"/v1/users/{user}/search", json={"query": "support group"}, headers=auth(key)
    ).json()
    assert "support group" in body["context"] and body["context_tokens"] > 0


def test_search_ranks_the_relevant_message_above_unrelated_ones(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(
        client,
        key,
        user,
        "s1",
        [message("a", SUPPORT_GROUP), message("b", ADOPTION), message("c", PAINTING)],
    )
    drain(settings, database_url)
    hits = search(client, key, user, "What did Caroline paint?", mode="fast")
    assert hits and "c" in hits[0]["source_message_ids"]


def test_search_packs_hits_into_the_token_budget(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message(f"m{i}", f"{PAINTING} Picture number {i}.") for i in range(30)])
    drain(settings, database_url)
    hits = search(client, key, user, "painting", max_tokens=60, limit=50)
    assert hits
    assert sum(h["tokens"] for h in hits) <= 60
    assert len(search(client, key, user, "painting", limit=3, max_tokens=100_000)) == 3


def test_search_of_unknown_user_is_404(client: TestClient) -> None:
    key = make_tenant_key(client)
    r = client.post("/v1/users/nobody-here/search", json={"query": "hello"}, headers=auth(key))
    assert r.status_code == 404 and "nobody-here" in r.json()["error"]


def test_unknown_job_is_404(client: TestClient) -> None:
    key = make_tenant_key(client)
    r = client.get("/v1/jobs/00000000-0000-0000-0000-000000000000", headers=auth(key))
    assert r.status_code == 404 and r.json()["error"]


# --- duplicates -------------------------------------------------------------------------------


def test_reposting_the_same_ids_adds_no_memory(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    batch = [message("D1:1", SUPPORT_GROUP), message("D1:2", ADOPTION), message("D1:3", PAINTING)]
    ingest(client, key, user, "s1", batch)
    drain(settings, database_url)
    uid = uid_of(engine, key, user)
    assert uid is not None
    units_before = count(engine, "SELECT count(*) FROM memory_unit WHERE user_id = :u", u=uid)
    vectors_before = index_count(client, uid)
    assert units_before >= 3 and vectors_before == postgres_vector_count(client, uid) >= 3

    again = ingest(client, key, user, "s1", batch)
    assert again["accepted"] == 0 and again["duplicates"] == 3
    assert job_status(client, key, again["job_id"])["status"] == "done"
    # Retrying with an edited text under the same id is still the same message: nothing new.
    edited = ingest(client, key, user, "s2", [message("D1:2", "something else entirely")])
    assert edited["accepted"] == 0 and edited["duplicates"] == 1
    drain(settings, database_url)

    assert count(engine, "SELECT count(*) FROM message WHERE user_id = :u", u=uid) == 3
    assert count(engine, "SELECT count(*) FROM memory_unit WHERE user_id = :u", u=uid) == units_before
    assert index_count(client, uid) == vectors_before
    assert "something else entirely" not in {h["text"] for h in search(client, key, user, "something else")}


def test_partially_overlapping_batch_counts_and_builds_only_the_new(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message("D1:1", SUPPORT_GROUP), message("D1:2", ADOPTION)])
    drain(settings, database_url)
    uid = uid_of(engine, key, user)
    assert uid is not None

    answer = ingest(client, key, user, "s1", [message("D1:2", ADOPTION), message("D1:3", PAINTING)])
    assert answer["accepted"] == 1 and answer["duplicates"] == 1
    drain(settings, database_url)

    assert job_status(client, key, answer["job_id"])["status"] == "done"
    assert "D1:3" in cited(search(client, key, user, "What did Caroline paint?"))
    # Each message is the source of exactly one message-level unit: the overlap built nothing twice.
    per_message = dict(
        engine.connect()
        .execute(
            text(
                "SELECT m, count(*) FROM memory_unit, unnest(source_message_ids) AS m "
                "WHERE user_id = :u AND kind = 'message' GROUP BY m"
            ),
            {"u": uid},
        )
        .all()
    )
    assert per_message == {"D1:1": 1, "D1:2": 1, "D1:3": 1}
    assert index_count(client, uid) == postgres_vector_count(client, uid)


def test_same_id_twice_in_one_batch_is_one_message(client: TestClient, engine: Engine) -> None:
    key, user = make_tenant_key(client), unique("u")
    answer = ingest(client, key, user, "s1", [message("x", SUPPORT_GROUP), message("x", SUPPORT_GROUP)])
    assert answer["accepted"] == 1 and answer["duplicates"] == 1
    uid = uid_of(engine, key, user)
    assert count(engine, "SELECT count(*) FROM message WHERE user_id = :u", u=uid) == 1


def test_same_message_id_for_two_users_is_two_messages(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key = make_tenant_key(client)
    first, second = unique("u"), unique("u")
    assert ingest(client, key, first, "s1", [message("D1:1", SUPPORT_GROUP)])["accepted"] == 1
    assert ingest(client, key, second, "s1", [message("D1:1", PAINTING)])["accepted"] == 1
    drain(settings, database_url)
    assert "D1:1" in cited(search(client, key, second, "painting a sunrise"))


# --- auth -------------------------------------------------------------------------------------

TENANT_ROUTES = [
    ("POST", "/v1/users/u1/sessions/s1/messages", {"messages": [message("a", SUPPORT_GROUP)]}),
    ("POST", "/v1/users/u1/search", {"query": "hello"}),
    ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000", None),
    ("DELETE", "/v1/users/u1", None),
]
ALL_ROUTES = [*TENANT_ROUTES, ("POST", "/v1/admin/keys", {"tenant": "someone"})]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer msk_thisKeyWasNeverIssued0000000000000000000000"},
        {"Authorization": b"Bearer \xe9\xff;DROP TABLE api_key"},  # not even ASCII
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
    ],
    ids=["missing", "unknown", "garbage", "empty", "basic-scheme", "no-scheme"],
)
@pytest.mark.parametrize("method,path,body", ALL_ROUTES, ids=[r[1] for r in ALL_ROUTES])
def test_missing_or_unknown_key_is_401(
    client: TestClient, headers: dict[str, Any], method: str, path: str, body: Any
) -> None:
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]


def test_revoked_key_is_401(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message("a", SUPPORT_GROUP)])
    drain(settings, database_url)
    assert client.post(f"/v1/users/{user}/search", json={"query": "x"}, headers=auth(key)).status_code == 200
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE api_key SET revoked_at = now() WHERE key_hash = :h"), {"h": store.hash_key(key)}
        )
    r = client.post(f"/v1/users/{user}/search", json={"query": "x"}, headers=auth(key))
    assert r.status_code == 401 and r.json()["error"]


def test_tenant_key_cannot_create_keys(client: TestClient, engine: Engine) -> None:
    key = make_tenant_key(client)
    tenant = unique("intruder")
    r = client.post("/v1/admin/keys", json={"tenant": tenant}, headers=auth(key))
    assert r.status_code == 403 and r.json()["error"]
    assert count(engine, "SELECT count(*) FROM tenant WHERE name = :n", n=tenant) == 0


@pytest.mark.parametrize("method,path,body", TENANT_ROUTES, ids=[r[1] for r in TENANT_ROUTES])
def test_admin_key_cannot_use_tenant_routes(
    client: TestClient, engine: Engine, method: str, path: str, body: Any
) -> None:
    before = count(engine, "SELECT count(*) FROM message")
    r = client.request(method, path, json=body, headers=auth(ADMIN_KEY))
    assert r.status_code == 403 and r.json()["error"]
    assert count(engine, "SELECT count(*) FROM message") == before


def test_admin_creates_a_working_key_shown_once(client: TestClient, engine: Engine) -> None:
    tenant = unique("acme")
    r = client.post("/v1/admin/keys", json={"tenant": tenant, "name": "ci"}, headers=auth(ADMIN_KEY))
    assert r.status_code == 201
    created = r.json()
    assert created["tenant"] == tenant and created["id"]
    secret = created["key"]
    # Only a hash is kept: the secret itself appears in no column.
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM api_key WHERE id = :i"), {"i": created["id"]}).one()
    assert all(secret not in str(v) for v in rows)
    ok = client.post("/v1/users/nobody/search", json={"query": "x"}, headers=auth(secret))
    assert ok.status_code == 404  # authenticated; the user just does not exist


# --- tenants ----------------------------------------------------------------------------------


def test_tenants_never_see_each_others_users(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key_a, key_b = make_tenant_key(client), make_tenant_key(client)
    user = unique("shared-user")
    job_a = ingest(client, key_a, user, "s1", [message("A:1", "My bank PIN is 4421, please remember it.")])
    drain(settings, database_url)

    # For tenant B, tenant A's user is exactly an unknown user.
    r = client.post(f"/v1/users/{user}/search", json={"query": "bank PIN"}, headers=auth(key_b))
    assert r.status_code == 404
    assert client.delete(f"/v1/users/{user}", headers=auth(key_b)).status_code == 404
    assert client.get(f"/v1/jobs/{job_a['job_id']}", headers=auth(key_b)).status_code == 404

    # The same user id in tenant B is a different user with its own memory.
    job_b = ingest(client, key_b, user, "s1", [message("A:1", PAINTING), message("B:2", ADOPTION)])
    assert job_b["accepted"] == 2 and job_b["duplicates"] == 0
    drain(settings, database_url)
    hits_b = search(client, key_b, user, "bank PIN number")
    assert cited(hits_b) <= {"A:1", "B:2"}
    assert all("4421" not in h["text"] and "4421" not in str(h) for h in hits_b)
    hits_a = search(client, key_a, user, "bank PIN number")
    assert "A:1" in cited(hits_a) and all("sunrise" not in h["text"] for h in hits_a)
    assert uid_of(engine, key_a, user) != uid_of(engine, key_b, user)

    # B erasing its user leaves A's untouched.
    assert client.delete(f"/v1/users/{user}", headers=auth(key_b)).status_code == 204
    assert "A:1" in cited(search(client, key_a, user, "bank PIN number"))
    assert job_status(client, key_a, job_a["job_id"])["status"] == "done"


# --- bad input --------------------------------------------------------------------------------

GOOD = message("ok-1", SUPPORT_GROUP)

BAD_BODIES: list[tuple[str, Any, str]] = [
    ("empty content", {"messages": [message("m", "")]}, "content"),
    ("blank content", {"messages": [message("m", "   \n ")]}, "content"),
    ("content not a string", {"messages": [{**GOOD, "content": 42}]}, "content"),
    ("content with NUL", {"messages": [message("m", "a\x00b")]}, "content"),
    ("messages not a list", {"messages": "hello"}, "messages"),
    ("no messages", {"messages": []}, "messages"),
    ("messages missing", {"wait": True}, "messages"),
    ("unknown message field", {"messages": [{**GOOD, "text": "hi"}]}, "text"),
    ("unknown top-level field", {"messages": [GOOD], "sesion": "x"}, "sesion"),
    ("malformed timestamp", {"messages": [{**GOOD, "created_at": "yesterday at 5"}]}, "created_at"),
    ("impossible date", {"messages": [{**GOOD, "created_at": "2023-02-30T10:00:00+00:00"}]}, "created_at"),
    ("naive timestamp", {"messages": [{**GOOD, "created_at": "2023-05-08T13:56:00"}]}, "created_at"),
    ("missing timestamp", {"messages": [{k: v for k, v in GOOD.items() if k != "created_at"}]}, "created_at"),
    ("bad role", {"messages": [{**GOOD, "role": "bot"}]}, "role"),
    ("missing id", {"messages": [{k: v for k, v in GOOD.items() if k != "id"}]}, "id"),
    ("id too long", {"messages": [message("x" * 201, SUPPORT_GROUP)]}, "id"),
    ("id with control char", {"messages": [message("a\nb", SUPPORT_GROUP)]}, "id"),
    ("wait not a bool", {"messages": [GOOD], "wait": "maybe"}, "wait"),
    ("body not an object", [GOOD], "body"),
    # One bad message spoils the batch: the good one before it is not written either.
    ("bad second message", {"messages": [GOOD, {**GOOD, "id": "ok-2", "role": "robot"}]}, "role"),
]


def assert_nothing_written(engine: Engine, user: str) -> None:
    assert count(engine, "SELECT count(*) FROM end_user WHERE external_id = :u", u=user) == 0


@pytest.mark.parametrize("body,names", [(b, n) for _, b, n in BAD_BODIES], ids=[c for c, _, _ in BAD_BODIES])
def test_bad_ingest_is_4xx_naming_the_problem_and_writes_nothing(
    client: TestClient, engine: Engine, body: Any, names: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    r = client.post(f"/v1/users/{user}/sessions/s1/messages", json=body, headers=auth(key))
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and names in error, error
    assert_nothing_written(engine, user)


def test_bad_batch_for_an_existing_user_writes_no_message(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message("old", SUPPORT_GROUP)])
    drain(settings, database_url)
    r = client.post(
        f"/v1/users/{user}/sessions/new-session/messages",
        json={"messages": [message("new-1", PAINTING), message("new-2", "x", created_at="not a time")]},
        headers=auth(key),
    )
    assert r.status_code == 422
    uid = uid_of(engine, key, user)
    assert count(engine, "SELECT count(*) FROM message WHERE user_id = :u", u=uid) == 1
    assert count(engine, "SELECT count(*) FROM chat_session WHERE user_id = :u", u=uid) == 1
    assert count(engine, "SELECT count(*) FROM job WHERE user_id = :u", u=uid) == 1


def test_malformed_json_is_422(client: TestClient, engine: Engine) -> None:
    key, user = make_tenant_key(client), unique("u")
    r = client.post(
        f"/v1/users/{user}/sessions/s1/messages",
        content=b'{"messages": [',
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert r.status_code == 422 and "JSON" in r.json()["error"]
    assert_nothing_written(engine, user)


def test_oversize_body_is_413_and_writes_nothing(client: TestClient, engine: Engine) -> None:
    key, user = make_tenant_key(client), unique("u")
    big = "word " * (MAX_BODY_BYTES // 5 + 100)
    r = client.post(
        f"/v1/users/{user}/sessions/s1/messages", json={"messages": [message("m", big)]}, headers=auth(key)
    )
    assert r.status_code == 413
    assert str(MAX_BODY_BYTES) in r.json()["error"]
    assert_nothing_written(engine, user)


def test_too_long_message_and_too_many_messages_are_refused(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    key, user = make_tenant_key(client), unique("u")
    long_text = "a" * (settings.max_message_chars + 1)
    r = client.post(
        f"/v1/users/{user}/sessions/s1/messages",
        json={"messages": [message("too-big-1", long_text)]},
        headers=auth(key),
    )
    assert r.status_code == 422 and "too-big-1" in r.json()["error"], r.text
    many = [message(f"m{i}", "hi") for i in range(settings.max_messages_per_request + 1)]
    r = client.post(f"/v1/users/{user}/sessions/s1/messages", json={"messages": many}, headers=auth(key))
    assert r.status_code == 422 and str(settings.max_messages_per_request) in r.json()["error"], r.text
    assert_nothing_written(engine, user)


@pytest.mark.parametrize(
    "path",
    ["/v1/users/{long}/sessions/s1/messages", "/v1/users/u1/sessions/{long}/messages"],
    ids=["user_id", "session_id"],
)
def test_too_long_path_ids_are_refused(client: TestClient, engine: Engine, path: str) -> None:
    key = make_tenant_key(client)
    r = client.post(path.format(long="x" * 201), json={"messages": [GOOD]}, headers=auth(key))
    assert r.status_code == 422 and r.json()["error"]
    assert_nothing_written(engine, "x" * 201)


@pytest.mark.parametrize(
    "body,names",
    [
        ({"query": ""}, "query"),
        ({"query": "x", "limit": 0}, "limit"),
        ({"query": "x", "mode": "turbo"}, "mode"),
        ({"query": "x", "as_of": "2023-05-08T13:56:00"}, "as_of"),
        ({"query": "x", "colour": "red"}, "colour"),
    ],
    ids=["empty query", "zero limit", "bad mode", "naive as_of", "unknown field"],
)
def test_bad_search_is_422_naming_the_problem(client: TestClient, body: Any, names: str) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [GOOD])
    r = client.post(f"/v1/users/{user}/search", json=body, headers=auth(key))
    assert r.status_code == 422 and names in r.json()["error"], r.text


# --- erasure ----------------------------------------------------------------------------------


def rows_of_user(engine: Engine, uid: int) -> dict[str, int]:
    """Rows per table that still reference the user (index_change's drop marker excepted)."""
    found: dict[str, int] = {}
    with engine.connect() as conn:
        for name, table in Base.metadata.tables.items():
            if name == "end_user":
                n = conn.execute(text("SELECT count(*) FROM end_user WHERE id = :u"), {"u": uid}).scalar_one()
            elif name == "index_change":
                n = conn.execute(
                    text("SELECT count(*) FROM index_change WHERE user_id = :u AND op <> 'drop_user'"),
                    {"u": uid},
                ).scalar_one()
            elif "user_id" in table.c:
                n = conn.execute(
                    text(f"SELECT count(*) FROM {name} WHERE user_id = :u"), {"u": uid}
                ).scalar_one()
            else:
                continue
            if n:
                found[name] = int(n)
        queued = conn.execute(
            text("SELECT count(*) FROM procrastinate_jobs WHERE lock = :l"), {"l": f"user-{uid}"}
        ).scalar_one()
        if queued:
            found["procrastinate_jobs"] = int(queued)
    return found


def test_erasure_leaves_no_row_vector_or_file_of_the_user(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key = make_tenant_key(client)
    user, other = unique("erase-me"), unique("keep-me")
    job = ingest(client, key, user, "s1", [message("D1:1", SUPPORT_GROUP), message("D1:2", ADOPTION)])
    ingest(client, key, user, "s2", [message("D2:1", PAINTING)])
    ingest(client, key, other, "s1", [message("D1:1", PAINTING)])
    drain(settings, database_url)
    uid, other_uid = uid_of(engine, key, user), uid_of(engine, key, other)
    assert uid is not None and other_uid is not None
    assert {"D1:1", "D2:1"} <= cited(search(client, key, user, "painting and support group"))
    with engine.connect() as conn:
        unit_ids = set(
            conn.execute(text("SELECT id FROM memory_unit WHERE user_id = :u"), {"u": uid}).scalars()
        )
    assert unit_ids and rows_of_user(engine, uid)

    r = client.delete(f"/v1/users/{user}", headers=auth(key))
    assert r.status_code == 204 and r.content == b""

    assert client.post(f"/v1/users/{user}/search", json={"query": "x"}, headers=auth(key)).status_code == 404
    assert client.get(f"/v1/jobs/{job['job_id']}", headers=auth(key)).status_code == 404
    assert client.delete(f"/v1/users/{user}", headers=auth(key)).status_code == 404
    assert rows_of_user(engine, uid) == {}
    state = app_state(client)
    assert index_count(client, uid) == 0
    assert all(unit_ids.isdisjoint(state.index.ids(u)) for u in state.index.counts())

    # The files under the data dir no longer hold the user's vectors either.
    on_disk = VectorIndex(state.index.model, state.index.dim, settings.index_dir)
    assert on_disk.load()
    assert on_disk.count(uid) == 0
    assert all(unit_ids.isdisjoint(on_disk.ids(u)) for u in on_disk.counts())
    assert on_disk.count(other_uid) > 0  # what was not erased is still there
    assert not any(p.name == f"u{uid}.faiss" for p in settings.index_dir.rglob("*"))

    # The other user is untouched, and the erased id can start over from nothing.
    assert "D1:1" in cited(search(client, key, other, "painting"))
    again = ingest(client, key, user, "s1", [message("D1:1", SUPPORT_GROUP)])
    assert again["accepted"] == 1 and again["duplicates"] == 0


def test_erasure_with_a_queued_job_does_not_bring_the_memory_back(
    client: TestClient, engine: Engine, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("erase-me")
    ingest(client, key, user, "s1", [message("D1:1", SUPPORT_GROUP)])
    uid = uid_of(engine, key, user)
    assert uid is not None
    assert client.delete(f"/v1/users/{user}", headers=auth(key)).status_code == 204

    drain(settings, database_url)  # the job queued before the erasure runs now, and must find nothing

    assert rows_of_user(engine, uid) == {}
    assert index_count(client, uid) == 0
    assert client.post(f"/v1/users/{user}/search", json={"query": "x"}, headers=auth(key)).status_code == 404
