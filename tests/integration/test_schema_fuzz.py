"""Bad input: schemathesis over every operation of the OpenAPI schema (no 5xx; every 4xx a JSON
error), then hand-written hostile requests, each answered with a clean 4xx that writes nothing."""

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from factories import (
    ADMIN_KEY,
    MAX_BODY_BYTES,
    auth,
    drain,
    ingest,
    make_settings,
    make_tenant_key,
    message,
    unique,
)
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.errors import SerializationError
from schemathesis.python import asgi
from sqlalchemy import Engine, text

from memsvc.main import create_app
from memsvc.settings import Settings

# Examples per operation and pass (three passes: generated ids, the known user's ids, negative).
# Hypothesis stops early where an operation has few distinct inputs: 28 operations gave ~2,750
# requests in ~30 s on two cores.
EXAMPLES = 50
KNOWN_USER = "fuzz-user"
SUPPORT_GROUP = "I went to a LGBTQ support group yesterday and it was so powerful."

# Import takes an export's JSON Lines: generated strings are sent as they are, like text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass
class Fuzz:
    schema: Any
    app: Any
    settings: Settings
    database_url: str
    tenant_key: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def fuzz(new_database: Callable[[], str]) -> Iterator[Fuzz]:
    """An app on a fresh database (so fuzzed erasures, revocations and rebuilds touch nothing else),
    without a rate limit (the fuzzer is one key making hundreds of requests a second) and with a
    short wait (a fuzzed `wait: true` ingest has no worker to wait for)."""
    url = new_database()
    app_settings = make_settings(url, rate_limit_per_s=0, wait_timeout_s=0.2)
    app = create_app(app_settings, url)
    # Loading the schema starts the app's lifespan in schemathesis' own event loop thread.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    setup = TestClient(app)  # not entered: the lifespan above already holds the app's state
    key = make_tenant_key(setup, "fuzz")
    ingest(
        setup,
        key,
        KNOWN_USER,
        "s1",
        [message("m1", SUPPORT_GROUP), message("m2", "Melanie said she paints sunsets.", speaker="Melanie")],
    )
    drain(app_settings, url)
    yield Fuzz(schema, app, app_settings, url, key)
    asgi.shutdown_lifespans()


def check(fuzz: Fuzz, label: str, case: Any) -> None:
    try:
        response = case.call()
    except SerializationError as exc:  # a media type schemathesis cannot write (e.g. JSON Lines)
        fuzz.skipped.append(f"{label}: {exc}")
        return
    except Exception as exc:  # the app raised through every handler: a 500 to a real client
        fuzz.requests += 1
        fuzz.statuses[500] += 1
        fuzz.problems.append(f"{label}: raised {type(exc).__name__}: {exc}\n{case.as_curl_command()}")
        return
    fuzz.requests += 1
    status = response.status_code
    fuzz.statuses[status] += 1
    if status >= 500:
        fuzz.problems.append(f"{label}: {status} {response.text[:300]}\n{case.as_curl_command()}")
    elif status >= 400:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if not (isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]):
            fuzz.problems.append(f"{label}: {status} without a JSON error: {response.text[:300]}")


def run_operation(fuzz: Fuzz, operation: Any) -> None:
    admin = operation.path.startswith("/v1/admin") or not operation.path.startswith("/v1")
    headers = auth(ADMIN_KEY if admin else fuzz.tenant_key)
    label = f"{operation.method.upper()} {operation.path}"
    names = {p.name for p in operation.path_parameters}
    passes: list[tuple[GenerationMode, dict[str, Any] | None]] = [(GenerationMode.POSITIVE, None)]
    if "user_id" in names and not admin:
        passes.append((GenerationMode.POSITIVE, {"user_id": KNOWN_USER}))
    passes.append((GenerationMode.NEGATIVE, None))
    for mode, path_parameters in passes:
        strategy = operation.as_strategy(
            generation_mode=mode, headers=headers, path_parameters=path_parameters
        )
        send_examples(fuzz, f"{label} [{mode.value}]", strategy)


def send_examples(fuzz: Fuzz, label: str, strategy: Any) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure here reproduces
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: failures are collected, not raised
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: Any) -> None:
        check(fuzz, label, case)

    try:
        send()
    except Unsatisfiable:  # nothing to vary (e.g. no negative form of a parameterless GET)
        fuzz.skipped.append(f"{label}: no such input")


def order(operation: Any) -> tuple[int, str]:
    """Destructive operations last: erasing the known user or revoking the fuzzer's own key early
    would leave the later operations nothing but 401s and 404s."""
    method, path = operation.method.upper(), operation.path
    return (
        2 if method == "DELETE" and path.startswith("/v1/admin/keys") else 1 if method == "DELETE" else 0,
        path,
    )


def test_fuzz_setup_built_memory(fuzz: Fuzz) -> None:
    """The fuzzer's known user really has memory, so its pass reaches past the 404s."""
    r = TestClient(fuzz.app).get(f"/v1/users/{KNOWN_USER}", headers=auth(fuzz.tenant_key))
    assert r.status_code == 200 and r.json()["units"] > 0, r.text


def test_schemathesis_finds_no_5xx_and_only_json_errors(fuzz: Fuzz, tmp_path: Path) -> None:
    operations = sorted((r.ok() for r in fuzz.schema.get_all_operations()), key=order)
    assert len(operations) >= 7, "the schema lists the contract's operations"
    start = time.monotonic()
    for operation in operations:
        run_operation(fuzz, operation)
    elapsed = time.monotonic() - start

    by_class = Counter(f"{s // 100}xx" for s in fuzz.statuses.elements())
    summary = {
        "operations": len(operations),
        "requests": fuzz.requests,
        "5xx": by_class.get("5xx", 0),
        "by_class": dict(sorted(by_class.items())),
        "by_status": dict(sorted(fuzz.statuses.items())),
        "seconds": round(elapsed, 1),
        "skipped": fuzz.skipped,
    }
    (tmp_path / "schemathesis-summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nschemathesis: {json.dumps(summary)}")
    assert fuzz.requests >= len(operations) * EXAMPLES, summary  # it really exercised the API
    assert by_class.get("2xx", 0) > 0 and by_class.get("4xx", 0) > 0, summary
    assert not fuzz.problems, "\n\n".join(fuzz.problems[:20])


# --- hand-written hostile input ---------------------------------------------------------------


def totals(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("end_user", "chat_session", "message", "job", "memory_unit")
        }


def assert_json_error(r: Any, *statuses: int) -> str:
    assert r.status_code in statuses, (r.status_code, r.text[:500])
    error = r.json()["error"]
    assert isinstance(error, str) and error
    return error


@pytest.fixture
def tenant(client: TestClient) -> tuple[str, str]:
    """A tenant key and a user of it that has one message."""
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message("m1", SUPPORT_GROUP)])
    return key, user


def post_raw(client: TestClient, path: str, key: str, body: bytes) -> Any:
    return client.post(path, content=body, headers={**auth(key), "Content-Type": "application/json"})


def test_invalid_utf8_body_is_4xx_and_writes_nothing(
    client: TestClient, engine: Engine, tenant: tuple[str, str]
) -> None:
    key, user = tenant
    before = totals(engine)
    body = (
        b'{"messages": [{"id": "x1", "role": "user", "created_at": "2023-05-08T13:56:00+00:00",'
        b' "content": "caf\xe9 \xff\xfe"}]}'
    )
    assert_json_error(post_raw(client, f"/v1/users/{user}/sessions/s1/messages", key, body), 400, 422)
    assert_json_error(post_raw(client, f"/v1/users/{user}/search", key, b'{"query": "\xc3\x28"}'), 400, 422)
    assert totals(engine) == before


@pytest.mark.parametrize(
    "field,value",
    [
        ("content", "a\\ud800b"),  # a lone surrogate: valid JSON, not encodable as UTF-8
        ("id", "x\\udfff"),
        ("speaker", "\\ud83d"),
    ],
)
def test_lone_surrogates_are_4xx_and_write_nothing(
    client: TestClient, engine: Engine, tenant: tuple[str, str], field: str, value: str
) -> None:
    key, user = tenant
    before = totals(engine)
    fields = {"id": "x1", "role": "user", "speaker": "Caroline", "created_at": "2023-05-08T13:56:00+00:00"}
    fields["content"] = "hello"
    raw = json.dumps({"messages": [fields]}).replace(f'"{fields[field]}"', f'"{value}"', 1)
    assert value in raw
    error = assert_json_error(
        post_raw(client, f"/v1/users/{user}/sessions/s1/messages", key, raw.encode()), 422
    )
    assert field in error
    query = '{"query": "support \\udc80 group"}'
    assert "query" in assert_json_error(
        post_raw(client, f"/v1/users/{user}/search", key, query.encode()), 422
    )
    assert totals(engine) == before


@pytest.mark.parametrize("bad", ["%01", "a%0Ab", "%7F", "%00", "x%1B%5B31m"])
def test_control_characters_in_path_ids_are_4xx_and_write_nothing(
    client: TestClient, engine: Engine, tenant: tuple[str, str], bad: str
) -> None:
    key, user = tenant
    before = totals(engine)
    r = client.post(
        f"/v1/users/{bad}/sessions/s1/messages", json={"messages": [message("c1", "hi")]}, headers=auth(key)
    )
    assert_json_error(r, 404, 422)
    r = client.post(
        f"/v1/users/{user}/sessions/{bad}/messages",
        json={"messages": [message("c2", "hi")]},
        headers=auth(key),
    )
    assert_json_error(r, 404, 422)
    assert_json_error(
        client.post(f"/v1/users/{bad}/search", json={"query": "x"}, headers=auth(key)), 404, 422
    )
    assert_json_error(client.get(f"/v1/jobs/{bad}", headers=auth(key)), 404, 422)
    assert totals(engine) == before


def test_control_characters_in_content_are_kept_as_text(
    client: TestClient, engine: Engine, tenant: tuple[str, str]
) -> None:
    """Content is the client's text: escape sequences and bells are stored as sent, not refused."""
    key, user = tenant
    odd = "bell\x07 esc\x1b[31m red\x1b[0m tab\t cr\r form\x0c del\x7f end"
    answer = ingest(client, key, user, "s1", [message("ctl-1", odd)])
    assert answer["accepted"] == 1
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT content FROM message WHERE external_id = 'ctl-1'")).scalar_one()
    assert stored == odd


@pytest.mark.parametrize(
    "body",
    [
        {"query": "x", "limit": 10**12},
        {"query": "x", "limit": -1},
        {"query": "x", "max_tokens": 10**15},
        {"query": "x", "max_tokens": 0},
        {"query": "x", "limit": 1.5},
        {"query": "x", "limit": "all"},
        {"query": "x" * 10_001},
        {"query": "x", "as_of": "9999-99-99T00:00:00+00:00"},
        {"query": "x", "occurred_after": "2024-01-01T00:00:00Z", "occurred_before": "2023-01-01T00:00:00Z"},
    ],
    ids=[
        "huge limit",
        "negative limit",
        "huge budget",
        "zero budget",
        "fractional limit",
        "limit word",
        "huge query",
        "impossible as_of",
        "inverted range",
    ],
)
def test_absurd_search_parameters_are_422(client: TestClient, tenant: tuple[str, str], body: Any) -> None:
    key, user = tenant
    assert_json_error(client.post(f"/v1/users/{user}/search", json=body, headers=auth(key)), 422)


def test_absurd_numbers_as_raw_json_are_422(client: TestClient, tenant: tuple[str, str]) -> None:
    key, user = tenant
    for raw in (
        b'{"query": "x", "limit": 1e400}',
        b'{"query": "x", "limit": NaN}',
        b'{"query": "x", "max_tokens": 99999999999999999999999999999}',
    ):
        assert_json_error(post_raw(client, f"/v1/users/{user}/search", key, raw), 422)


def test_huge_message_content_is_refused_and_writes_nothing(
    client: TestClient, engine: Engine, settings: Settings, tenant: tuple[str, str]
) -> None:
    key, user = tenant
    before = totals(engine)
    big = "é" * (settings.max_message_chars + 1)  # under the byte limit, over the character limit
    assert len(json.dumps({"messages": [message("h1", big)]}).encode()) < MAX_BODY_BYTES
    r = client.post(
        f"/v1/users/{user}/sessions/s1/messages", json={"messages": [message("h1", big)]}, headers=auth(key)
    )
    assert "h1" in assert_json_error(r, 422)
    huge = b"{" + b" " * (MAX_BODY_BYTES + 1) + b"}"
    assert_json_error(post_raw(client, f"/v1/users/{user}/sessions/s1/messages", key, huge), 413)
    assert totals(engine) == before


def test_a_lying_content_length_is_refused(client: TestClient, tenant: tuple[str, str]) -> None:
    key, user = tenant
    for declared in ("-1", "abc", str(10**30)):
        r = client.post(
            f"/v1/users/{user}/search",
            content=b'{"query": "x"}',
            headers={**auth(key), "Content-Type": "application/json", "Content-Length": declared},
        )
        assert_json_error(r, 400, 413)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/users/{unknown}"),
        ("POST", "/v1/users/{unknown}/search"),
        ("GET", "/v1/jobs/{unknown}"),
        ("GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"),
        ("DELETE", "/v1/users/{unknown}"),
        ("GET", "/v1/users/{user}/memories/edu-99999999999999999999"),
        ("GET", "/v1/users/{user}/memories/edu-9223372036854775807"),
        ("DELETE", "/v1/users/{user}/memories/note-1"),
        ("GET", "/v1/users/{unknown}/export"),
        ("GET", "/v1/no/such/route"),
    ],
)
def test_unknown_users_ids_and_routes_are_404_json(
    client: TestClient, engine: Engine, tenant: tuple[str, str], method: str, path: str
) -> None:
    key, user = tenant
    before = totals(engine)
    url = path.format(unknown=unique("nobody"), user=user)
    body = {"query": "x"} if method == "POST" else None
    assert_json_error(client.request(method, url, json=body, headers=auth(key)), 404, 422)
    assert totals(engine) == before


@pytest.mark.parametrize(
    "method,path",
    [
        ("DELETE", "/v1/admin/keys/99999999999999999999"),
        ("DELETE", "/v1/admin/keys/-1"),
        ("POST", "/v1/admin/jobs/{unknown}/retry"),
        ("GET", "/v1/admin/tenants/{unknown}/users"),
        ("GET", "/v1/admin/jobs?limit=100000000000000000000"),
        ("GET", "/v1/admin/audit?limit=-5"),
    ],
)
def test_admin_routes_answer_absurd_ids_with_json_4xx(client: TestClient, method: str, path: str) -> None:
    url = path.format(unknown=unique("nobody"))
    assert_json_error(client.request(method, url, headers=auth(ADMIN_KEY)), 404, 409, 422)
