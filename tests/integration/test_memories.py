"""A user's memory managed through the API: list, inspect, correct, delete, export and import."""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from factories import ADMIN_KEY, auth, drain, ingest, make_tenant_key, message, search, unique, user_row_id
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from memsvc import recall, store
from memsvc.settings import Settings
from memsvc.state import AppState

NDJSON = {"Content-Type": "application/x-ndjson"}

SESSION_ONE = [
    ("a1", "I live in Boston."),
    ("a2", "My puppy Biscuit loves the beach."),
    ("a3", "Biscuit came with us to Lake Tahoe in July."),
    ("a4", "I work as a teacher at the local school."),
    ("a5", "I painted a sunrise over the lake last weekend, with lots of orange."),
]
SESSION_TWO = [
    ("b1", "I moved to Seattle last month."),
    ("b2", "We are thinking about adopting a child next year, I researched agencies."),
]
QUERIES = [
    "Where does Jon live?",
    "Which places has Jon's puppy been to?",
    "What did Jon paint?",
    "What is Jon's job?",
    "Is Jon planning to adopt?",
]


def build_story(client: TestClient, settings: Settings, database_url: str) -> tuple[str, str]:
    """A user with two sessions: the second moves Jon to Seattle, superseding the Boston note."""
    key, user = make_tenant_key(client), unique("user")
    ingest(
        client,
        key,
        user,
        "s1",
        [message(i, c, speaker="Jon", created_at="2023-01-10T10:00:00+00:00") for i, c in SESSION_ONE],
    )
    drain(settings, database_url)
    ingest(
        client,
        key,
        user,
        "s2",
        [message(i, c, speaker="Jon", created_at="2023-06-01T10:00:00+00:00") for i, c in SESSION_TWO],
    )
    drain(settings, database_url)
    return key, user


@pytest.fixture(scope="module")
def story(client: TestClient, settings: Settings, database_url: str) -> tuple[str, str]:
    """Built once and only read by the tests that take it."""
    return build_story(client, settings, database_url)


def uid_of(engine: Engine, key: str, user: str) -> int | None:
    with engine.connect() as conn:
        return user_row_id(conn, key, user)


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.memsvc  # type: ignore[attr-defined]  # set by the lifespan
    return state


def db_ids(engine: Engine, key: str, user: str, where: str = "true", **params: Any) -> list[int]:
    with engine.connect() as conn:
        uid = user_row_id(conn, key, user)
        rows = conn.execute(
            text(f"SELECT id FROM memory_unit WHERE user_id = :uid AND {where} ORDER BY id"),
            {"uid": uid, **params},
        )
        return [int(r[0]) for r in rows]


def walk(client: TestClient, key: str, user: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every page of the listing; returns the items and the number of pages."""
    items: list[dict[str, Any]] = []
    cursor, pages = None, 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/v1/users/{user}/memories", params=query, headers=auth(key))
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["memories"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(body["memories"]) == params["limit"]


def number(memory_id: str) -> int:
    return int(memory_id.rsplit("-", 1)[1])


def memory(client: TestClient, key: str, user: str, memory_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/users/{user}/memories/{memory_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def listed(client: TestClient, key: str, user: str, **params: Any) -> list[dict[str, Any]]:
    items, _ = walk(client, key, user, limit=500, **params)
    return items


def export(client: TestClient, key: str, user: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/users/{user}/export", headers=auth(key))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines()]


def ndjson(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def index_ids(client: TestClient, uid: int) -> set[int]:
    state = app_state(client)
    with state.factory() as session:
        recall.refresh_index(session, state.index)
    return state.index.ids(uid)


def postgres_vector_ids(engine: Engine, uid: int, model: str) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id FROM memory_unit WHERE user_id = :u AND embed_model = :m"
                " AND vector IS NOT NULL AND kind = ANY(:k)"
            ),
            {"u": uid, "m": model, "k": list(store.INDEXED_KINDS)},
        )
        return {int(r[0]) for r in rows}


# --- listing ----------------------------------------------------------------------------------


def test_pages_walk_every_unit_once_in_id_order(client, engine, story):
    key, user = story
    everything, pages = walk(client, key, user, limit=3)
    ids = [number(m["id"]) for m in everything]
    assert ids == db_ids(engine, key, user)  # each unit once, ascending, nothing left out
    assert pages == -(-len(ids) // 3) and len(ids) > 10
    assert {m["kind"] for m in everything} == {"message", "edu", "note", "episode", "entity"}
    assert [m["id"] for m in listed(client, key, user)] == [m["id"] for m in everything]

    edus, _ = walk(client, key, user, limit=2, kind="edu")
    assert [number(m["id"]) for m in edus] == db_ids(engine, key, user, "kind = 'edu'")
    assert all(m["id"].startswith("edu-") and m["source_message_ids"] for m in edus)

    second, _ = walk(client, key, user, limit=2, session_id="s2")
    assert second and {m["session_id"] for m in second} == {"s2"}
    in_s2 = (
        "session_id = (SELECT id FROM chat_session"
        " WHERE user_id = memory_unit.user_id AND external_id = 's2')"
    )
    assert [number(m["id"]) for m in second] == db_ids(engine, key, user, in_s2)
    notes_s2, _ = walk(client, key, user, limit=1, kind="note", session_id="s2")
    assert notes_s2 and all(m["kind"] == "note" and m["session_id"] == "s2" for m in notes_s2)
    assert listed(client, key, user, session_id="no-such-session") == []


def test_a_superseded_note_is_listed_as_history(client, story):
    key, user = story
    notes = {m["text"]: m for m in listed(client, key, user, kind="note")}
    boston, seattle = notes["Jon lives in Boston."], notes["Jon lives in Seattle."]
    assert boston["valid_to"] is not None and boston["superseded_by"] == seattle["id"]
    assert seattle["valid_to"] is None and seattle["superseded_by"] is None
    assert boston["session_id"] == "s1" and boston["source_message_ids"] == ["a1"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b"after:x").decode(), "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("kind=fact", "kind"),
        ("session_id=s%001", "session_id"),
    ],
)
def test_bad_cursor_limit_or_kind_is_422(client, story, query, field):
    key, user = story
    r = client.get(f"/v1/users/{user}/memories?{query}", headers=auth(key))
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]


def test_bad_or_unknown_memory_ids(client, story):
    key, user = story
    edu = listed(client, key, user, kind="edu")[0]
    for bad in ("edu", "edu-", "fact-12", "edu-12x", "12", "edu-" + "9" * 19):
        r = client.get(f"/v1/users/{user}/memories/{bad}", headers=auth(key))
        assert r.status_code == 422 and "memory id" in r.json()["error"], (bad, r.text)
    r = client.get("/v1/users/a%00b/memories", headers=auth(key))
    assert r.status_code == 422 and "user_id" in r.json()["error"], r.text
    for unknown in ("edu-999999999", "note-" + str(number(edu["id"]))):  # no such unit; wrong kind
        r = client.get(f"/v1/users/{user}/memories/{unknown}", headers=auth(key))
        assert r.status_code == 404 and unknown in r.json()["error"], r.text


# --- one memory -------------------------------------------------------------------------------


def test_a_memory_shows_its_links_sources_and_history(client, story):
    key, user = story
    notes = {m["text"]: m for m in listed(client, key, user, kind="note")}
    boston, seattle = notes["Jon lives in Boston."], notes["Jon lives in Seattle."]

    detail = memory(client, key, user, seattle["id"])
    assert detail["text"] == "Jon lives in Seattle." and detail["attrs"]["attribute"] == "lives_in"
    assert [v["id"] for v in detail["history"]] == [boston["id"], seattle["id"]]  # oldest first
    assert detail["history"][0]["valid_to"] is not None
    assert [(s["id"], s["speaker"], s["content"], s["session_id"]) for s in detail["sources"]] == [
        ("b1", "Jon", "I moved to Seattle last month.", "s2")
    ]
    support = [link for link in detail["links"] if link["relation"] == "supported_by"]
    assert support and all(link["direction"] == "out" for link in support)
    assert any(link["other"]["kind"] == "edu" and "Seattle" in link["other"]["text"] for link in support)
    assert detail["links_total"] == len(detail["links"])
    # The same chain seen from the old version.
    assert [v["id"] for v in memory(client, key, user, boston["id"])["history"]] == [
        boston["id"],
        seattle["id"],
    ]

    edu = next(m for m in listed(client, key, user, kind="edu") if m["source_message_ids"] == ["a3"])
    detail = memory(client, key, user, edu["id"])
    relations = {(link["relation"], link["direction"], link["other"]["kind"]) for link in detail["links"]}
    assert ("mentions", "out", "entity") in relations and ("in_episode", "out", "episode") in relations
    assert any(link["other"]["text"] == "Biscuit" for link in detail["links"])
    assert detail["sources"][0]["content"] == SESSION_ONE[2][1]
    assert [v["id"] for v in detail["history"]] == [edu["id"]]

    entity = next(link["other"] for link in detail["links"] if link["other"]["text"] == "Biscuit")
    back = memory(client, key, user, entity["id"])
    assert back["kind"] == "entity" and back["sources"] == []
    assert any(link["direction"] == "in" and link["other"]["id"] == edu["id"] for link in back["links"])


# --- corrections ------------------------------------------------------------------------------


def test_a_correction_supersedes_keeps_history_and_search_follows(client, settings, database_url, engine):
    key, user = make_tenant_key(client), unique("user")
    ingest(client, key, user, "s1", [message(i, c, speaker="Jon") for i, c in SESSION_ONE])
    drain(settings, database_url)
    old = next(m for m in listed(client, key, user, kind="edu") if m["source_message_ids"] == ["a2"])
    old_detail = memory(client, key, user, old["id"])
    question = "Where does Jon's puppy Biscuit love to go?"
    assert old["text"] in [h["text"] for h in search(client, key, user, question, mode="fast")]
    before = datetime.now(UTC).isoformat()

    fixed = "Jon (8 May 2023): Jon's puppy Biscuit loves the mountains, not the sea."
    r = client.patch(f"/v1/users/{user}/memories/{old['id']}", json={"text": fixed}, headers=auth(key))
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["id"] != old["id"] and new["kind"] == "edu" and new["text"] == fixed
    assert new["session_id"] == "s1" and new["source_message_ids"] == ["a2"]
    assert new["attrs"]["agent_correction"] is True and new["valid_to"] is None
    assert datetime.fromisoformat(new["valid_from"]) > datetime.fromisoformat(before)
    assert [v["id"] for v in new["history"]] == [old["id"], new["id"]]
    assert new["history"][0]["superseded_by"] == new["id"] and new["history"][0]["valid_to"] is not None
    # Its edges were copied: the same neighbours, seen from the new version.
    assert sorted((x["relation"], x["direction"], x["other"]["id"]) for x in new["links"]) == sorted(
        (x["relation"], x["direction"], x["other"]["id"]) for x in old_detail["links"]
    )
    still = memory(client, key, user, old["id"])
    assert still["text"] == old["text"] and still["superseded_by"] == new["id"]  # never edited

    for mode in ("fast", "deep"):
        texts = [h["text"] for h in search(client, key, user, question, mode=mode)]
        assert fixed in texts and old["text"] not in texts, (mode, texts)
        then = [h["text"] for h in search(client, key, user, question, mode=mode, as_of=before)]
        assert old["text"] in then and fixed not in then, (mode, then)

    uid = uid_of(engine, key, user)
    assert uid is not None
    assert index_ids(client, uid) == postgres_vector_ids(engine, uid, app_state(client).index.model)
    assert number(new["id"]) in index_ids(client, uid)

    again = client.patch(f"/v1/users/{user}/memories/{old['id']}", json={"text": "x y"}, headers=auth(key))
    assert again.status_code == 409 and new["id"] in again.json()["error"]


def test_messages_and_entities_cannot_be_corrected(client, story, engine):
    key, user = story
    units_before = db_ids(engine, key, user)
    msg = listed(client, key, user, kind="message")[0]
    r = client.patch(f"/v1/users/{user}/memories/{msg['id']}", json={"text": "rewritten"}, headers=auth(key))
    assert r.status_code == 422 and "message" in r.json()["error"]
    entity = listed(client, key, user, kind="entity")[0]
    r = client.patch(f"/v1/users/{user}/memories/{entity['id']}", json={"text": "Bob"}, headers=auth(key))
    assert r.status_code == 422 and "entit" in r.json()["error"]
    note = next(m for m in listed(client, key, user, kind="note") if m["text"] == "Jon lives in Boston.")
    r = client.patch(
        f"/v1/users/{user}/memories/{note['id']}", json={"text": "Jon lives in Rome."}, headers=auth(key)
    )
    assert r.status_code == 409 and "superseded" in r.json()["error"]
    edu = listed(client, key, user, kind="edu")[0]
    for body in (
        '{"text": ""}',
        '{"text": "   "}',
        "{}",
        '{"text": "ok", "extra": 1}',
        '{"text": "a\\ud800"}',
    ):
        r = client.patch(
            f"/v1/users/{user}/memories/{edu['id']}",
            content=body,
            headers={**auth(key), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (body, r.text)
    assert db_ids(engine, key, user) == units_before


# --- deletion ---------------------------------------------------------------------------------


def test_deleting_a_memory_removes_it_from_search_and_index_and_is_audited(
    client, settings, database_url, engine
):
    key, user = make_tenant_key(client), unique("user")
    ingest(client, key, user, "s1", [message(i, c, speaker="Jon") for i, c in SESSION_ONE])
    drain(settings, database_url)
    question = "What did Jon paint?"
    hit = next(h for h in search(client, key, user, question, mode="fast") if h["kind"] == "edu")
    uid = uid_of(engine, key, user)
    assert uid is not None and number(hit["id"]) in index_ids(client, uid)
    links = len(memory(client, key, user, hit["id"])["links"])

    r = client.delete(f"/v1/users/{user}/memories/{hit['id']}", headers=auth(key))
    assert r.status_code == 204, r.text

    assert client.get(f"/v1/users/{user}/memories/{hit['id']}", headers=auth(key)).status_code == 404
    for mode in ("fast", "deep"):
        assert hit["id"] not in [h["id"] for h in search(client, key, user, question, mode=mode)]
    assert number(hit["id"]) not in index_ids(client, uid)
    assert index_ids(client, uid) == postgres_vector_ids(engine, uid, app_state(client).index.model)
    with engine.connect() as conn:
        edges = conn.execute(
            text("SELECT count(*) FROM unit_link WHERE src_id = :i OR dst_id = :i"), {"i": number(hit["id"])}
        ).scalar_one()
        entry = conn.execute(
            text(
                "SELECT actor, tenant, target, counts FROM audit_entry WHERE action = 'delete_memory'"
                " AND target LIKE :t"
            ),
            {"t": f"%{user}%"},
        ).one()
    assert edges == 0
    assert entry.target == f"user {user} memory {hit['id']}" and entry.actor.startswith("key ")
    assert entry.counts == {"units": 1, "links": links} and links > 0
    assert client.delete(f"/v1/users/{user}/memories/{hit['id']}", headers=auth(key)).status_code == 404


def test_a_message_memory_is_not_deleted_on_its_own(client, story, engine):
    key, user = story
    msg = listed(client, key, user, kind="message")[0]
    r = client.delete(f"/v1/users/{user}/memories/{msg['id']}", headers=auth(key))
    assert r.status_code == 409 and "erase the user" in r.json()["error"]
    assert number(msg["id"]) in db_ids(engine, key, user)


# --- tenants ----------------------------------------------------------------------------------


def test_another_tenant_or_user_gets_404_on_every_memory_route(client, story, engine):
    key, user = story
    units_before = db_ids(engine, key, user)
    edu = listed(client, key, user, kind="edu")[0]
    stranger = make_tenant_key(client)
    base = f"/v1/users/{user}"
    calls = [
        ("GET", f"{base}/memories", None),
        ("GET", f"{base}/memories/{edu['id']}", None),
        ("PATCH", f"{base}/memories/{edu['id']}", {"text": "stolen"}),
        ("DELETE", f"{base}/memories/{edu['id']}", None),
        ("GET", f"{base}/export", None),
    ]
    for method, url, body in calls:
        r = client.request(method, url, json=body, headers=auth(stranger))
        assert r.status_code == 404 and user in r.json()["error"], (method, url, r.text)
    # A user of the same tenant cannot reach this user's memory by its id either.
    neighbour = unique("user")
    ingest(client, key, neighbour, "s1", [message("n1", "Hello there.")])
    for method, url, body in calls[1:4]:
        r = client.request(method, url.replace(base, f"/v1/users/{neighbour}"), json=body, headers=auth(key))
        assert r.status_code == 404 and edu["id"] in r.json()["error"], (method, url, r.text)
    # The admin key manages keys, not memory.
    r = client.get(f"{base}/memories", headers=auth(ADMIN_KEY))
    assert r.status_code == 403
    assert db_ids(engine, key, user) == units_before


# --- export and import ------------------------------------------------------------------------


def _ranked(client: TestClient, key: str, user: str, query: str, **options: Any) -> list[tuple[str, float]]:
    return [(h["text"], h["score"]) for h in search(client, key, user, query, max_tokens=2000, **options)]


def assert_same_hits(original: list[tuple[str, float]], imported: list[tuple[str, float]]) -> None:
    """The same texts in the same order with the same scores (the API rounds them to 1e-6)."""
    assert original and [t for t, _ in imported] == [t for t, _ in original]
    assert all(abs(a - b) <= 1e-5 for (_, a), (_, b) in zip(original, imported, strict=True))


def test_export_then_import_into_another_tenant_searches_exactly_alike(
    client, settings, database_url, engine
):
    key, user = build_story(client, settings, database_url)
    # Salience (feedback) and an agent's correction must travel too.
    hits = search(client, key, user, QUERIES[2], mode="fast")
    r = client.post(
        f"/v1/users/{user}/feedback",
        json={"used": [hits[1]["id"]], "unused": [hits[0]["id"]]},
        headers=auth(key),
    )
    assert r.status_code == 200 and r.json()["updated"] == 2
    edu = next(m for m in listed(client, key, user, kind="edu") if m["source_message_ids"] == ["a4"])
    fixed = "Jon works as a teacher at the high school."
    r = client.patch(f"/v1/users/{user}/memories/{edu['id']}", json={"text": fixed}, headers=auth(key))
    assert r.status_code == 200, r.text

    lines = export(client, key, user)
    header = lines[0]
    state = app_state(client)
    assert header["type"] == "header" and header["format"] == "memsvc-export" and header["version"] == 1
    assert (header["model"], header["dim"], header["user_id"]) == (state.index.model, state.index.dim, user)
    kinds = [line["type"] for line in lines]
    assert kinds == sorted(kinds, key=["header", "session", "message", "unit", "link"].index)
    units = [line for line in lines if line["type"] == "unit"]
    assert len(units) == len(db_ids(engine, key, user))
    assert sum(t == "message" for t in kinds) == len(SESSION_ONE) + len(SESSION_TWO)
    assert any(u["salience"] != 0 for u in units)
    assert all(len(base64.b64decode(u["vector"])) == 4 * header["dim"] for u in units)

    other_key, copy = make_tenant_key(client), unique("copy")
    r = client.post(f"/v1/users/{copy}/import", content=ndjson(lines), headers={**auth(other_key), **NDJSON})
    assert r.status_code == 201, r.text
    counts = r.json()
    assert counts["user_id"] == copy and counts["units"] == len(units) and counts["sessions"] == 2
    assert counts["links"] == kinds.count("link") > 0

    for query in QUERIES:
        for mode in ("fast", "deep"):
            original = _ranked(client, key, user, query, mode=mode)
            assert_same_hits(original, _ranked(client, other_key, copy, query, mode=mode))
    then = {"mode": "deep", "as_of": "2023-03-01T00:00:00+00:00"}
    original = _ranked(client, key, user, QUERIES[0], **then)
    assert "Jon lives in Boston." in [t for t, _ in original]
    assert_same_hits(original, _ranked(client, other_key, copy, QUERIES[0], **then))
    assert fixed in [t for t, _ in _ranked(client, other_key, copy, QUERIES[3], mode="deep")]

    # The listing reads the same, and the copy's own export holds the same units and vectors.
    def shape(m: dict[str, Any]) -> tuple[Any, ...]:
        return (
            m["kind"],
            m["text"],
            m["session_id"],
            m["valid_from"],
            m["valid_to"],
            m["superseded_by"] is None,
            m["salience"],
            m["source_message_ids"],
        )

    assert [shape(m) for m in listed(client, other_key, copy)] == [
        shape(m) for m in listed(client, key, user)
    ]
    again = [u for u in export(client, other_key, copy) if u["type"] == "unit"]
    fields = (
        "kind",
        "text",
        "vector",
        "salience",
        "attrs",
        "valid_from",
        "valid_to",
        "occurred_at",
        "created_at",
    )
    assert [[u[f] for f in fields] for u in again] == [[u[f] for f in fields] for u in units]
    copy_uid = uid_of(engine, other_key, copy)
    assert copy_uid is not None
    assert index_ids(client, copy_uid) == postgres_vector_ids(engine, copy_uid, state.index.model)

    # Importing into the original user (not empty) is refused; the copy's tenant importing under
    # the original's user id gets a user of its own, leaving the original as it was.
    before = db_ids(engine, key, user)
    r = client.post(f"/v1/users/{user}/import", content=ndjson(lines), headers={**auth(key), **NDJSON})
    assert r.status_code == 409 and "already has memory" in r.json()["error"]
    r = client.post(f"/v1/users/{copy}/import", content=ndjson(lines), headers={**auth(other_key), **NDJSON})
    assert r.status_code == 409
    r = client.post(f"/v1/users/{user}/import", content=ndjson(lines), headers={**auth(other_key), **NDJSON})
    assert r.status_code == 201
    assert db_ids(engine, key, user) == before


def _corrupt(lines: list[dict[str, Any]], line_type: str, **change: Any) -> tuple[bytes, int]:
    """The document with the first line of that type changed; returns it and that line's number."""
    at = next(i for i, line in enumerate(lines) if line["type"] == line_type)
    changed = [dict(line, **change) if i == at else line for i, line in enumerate(lines)]
    return ndjson(changed), at + 1


def test_a_bad_import_line_is_named_and_nothing_is_written(client, story, engine):
    key, user = story
    lines = export(client, key, user)
    other_key = make_tenant_key(client)
    unit = next(line for line in lines if line["type"] == "unit")
    cases = [
        _corrupt(lines, "unit", vector=base64.b64encode(b"\x00" * 12).decode()),
        _corrupt(lines, "unit", vector="not base64!"),
        _corrupt(lines, "unit", text=unit["text"] + " (edited)"),  # content_hash no longer matches
        _corrupt(lines, "unit", session=987654321),
        _corrupt(lines, "unit", kind="fact"),
        _corrupt(lines, "unit", salience="high"),
        _corrupt(lines, "message", content=""),
        _corrupt(lines, "message", created_at="yesterday"),
        _corrupt(lines, "message", content="nul \x00 inside"),
        _corrupt(lines, "link", src=987654321),
        _corrupt(lines, "session", surprise=1),
        _corrupt(lines, "header", format="other"),
    ]
    raw = ndjson(lines).split(b"\n")
    cases.append((b"\n".join([*raw[:3], b"{not json", *raw[3:]]), 4))
    cases.append((b"\n".join([*raw[:3], b'{"type": "unit", "salience": NaN}', *raw[3:]]), 4))
    cases.append((b"\n".join([*raw[:2], b'"\xff\xfe"', *raw[2:]]), 3))
    cases.append((b"\n".join([*raw[:3], b"[" * 100_000, *raw[3:]]), 4))
    cases.append((b"\n".join([*raw[:2], raw[1], *raw[2:]]), 3))  # a session twice
    for document, line in cases:
        target = unique("imp")
        r = client.post(f"/v1/users/{target}/import", content=document, headers={**auth(other_key), **NDJSON})
        assert r.status_code == 422, (line, r.text)
        assert r.json()["error"].startswith(f"line {line}:"), (line, r.text)
        assert uid_of(engine, other_key, target) is None  # not even the user row

    r = client.post(
        f"/v1/users/{unique('imp')}/import",
        content=_corrupt(lines, "header", model="other-model")[0],
        headers={**auth(other_key), **NDJSON},
    )
    assert r.status_code == 409 and "other-model" in r.json()["error"]
    r = client.post(f"/v1/users/{unique('imp')}/import", content=b"", headers={**auth(other_key), **NDJSON})
    assert r.status_code == 422
    big = b" " * (settings_max_body(client) + 1)
    r = client.post(f"/v1/users/{unique('imp')}/import", content=big, headers={**auth(other_key), **NDJSON})
    assert r.status_code == 413
    with engine.connect() as conn:
        tenant_users = conn.execute(
            text(
                "SELECT count(*) FROM end_user u JOIN api_key k ON k.tenant_id = u.tenant_id"
                " WHERE k.key_hash = :h"
            ),
            {"h": store.hash_key(other_key)},
        ).scalar_one()
    assert tenant_users == 0


def settings_max_body(client: TestClient) -> int:
    return app_state(client).settings.max_body_bytes


def test_an_episode_correction_survives_later_builds_of_its_session(client, settings, database_url):
    key, user = make_tenant_key(client), unique("user")
    day_one = [("e1", "I adopted a puppy called Biscuit today."), ("e2", "Biscuit chewed my slippers.")]
    ingest(client, key, user, "s1", [message(i, c, speaker="Jon") for i, c in day_one])
    drain(settings, database_url)
    (first,) = listed(client, key, user, kind="episode")
    fixed = "Episode: Jon adopted a beagle puppy named Biscuit, who chewed his slippers."
    r = client.patch(f"/v1/users/{user}/memories/{first['id']}", json={"text": fixed}, headers=auth(key))
    assert r.status_code == 200, r.text
    correction = r.json()["id"]

    # Days later the session goes on: a time gap closes the first episode, so its cut stays.
    later = "2023-05-12T09:00:00+00:00"
    more = [("e3", "I started learning the violin.", later), ("e4", "My teacher is called Ines.", later)]
    ingest(client, key, user, "s1", [message(i, c, speaker="Jon", created_at=w) for i, c, w in more])
    drain(settings, database_url)
    now = {m["id"]: m for m in listed(client, key, user, kind="episode")}
    assert now[correction]["valid_to"] is None, "the agent's correction is still the current version"
    assert now[first["id"]]["superseded_by"] == correction
    assert fixed in [h["text"] for h in search(client, key, user, "What kind of puppy is Biscuit?")]

    # The open episode (the violin one) is re-cut when its session grows: a correction of it is
    # closed and kept, and the rebuilt episode is current.
    (violin,) = [m for m in now.values() if "e3" in m["source_message_ids"] and m["valid_to"] is None]
    text = "Episode: Jon began violin lessons with Ines."
    r = client.patch(f"/v1/users/{user}/memories/{violin['id']}", json={"text": text}, headers=auth(key))
    assert r.status_code == 200, r.text
    ingest(
        client,
        key,
        user,
        "s1",
        [message("e5", "Ines says I practise well.", speaker="Jon", created_at=later)],
    )
    drain(settings, database_url)
    after = {m["id"]: m for m in listed(client, key, user, kind="episode")}
    assert after[r.json()["id"]]["valid_to"] is not None
    current = [m for m in after.values() if m["valid_to"] is None]
    assert sorted(m["id"] for m in current if "e1" in m["source_message_ids"]) == [correction]
    assert any("e5" in m["source_message_ids"] for m in current)
