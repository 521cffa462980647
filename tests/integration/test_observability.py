"""Operating memsvc: /metrics, request and job ids in the logs, no secret in any log line, per-key
rate limits, no CORS, and no telemetry sent anywhere."""

import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from factories import (
    ADMIN_KEY,
    auth,
    drain,
    ingest,
    make_settings,
    make_tenant_key,
    message,
    search,
    short_tmp_dir,
    unique,
)
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from memsvc import logs, recall
from memsvc.main import create_app
from memsvc.settings import Settings
from memsvc.state import AppState

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_llm import Reply, fake_llm  # noqa: E402

SUPPORT_GROUP = "I went to a LGBTQ support group yesterday and it was so powerful."
SEARCH_ROUTE = "/v1/users/{user_id}/search"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, key: str | None = ADMIN_KEY) -> Samples:
    r = client.get("/metrics", headers=auth(key) if key else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def app_state(client: TestClient) -> AppState:
    state: AppState = client.app.state.memsvc  # type: ignore[attr-defined]  # set by the lifespan
    return state


@pytest.fixture(scope="module")
def limited(new_database: Callable[[], str]) -> Iterator[TestClient]:
    """An app of its own (fresh database) with a tight rate limit and a public /metrics."""
    url = new_database()
    settings = make_settings(url, rate_limit_per_s=1.0, rate_limit_burst=3, metrics_public=True)
    with TestClient(create_app(settings, url)) as client:
        yield client


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_need_the_admin_key_by_default(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", headers=auth(make_tenant_key(client)))
    assert r.status_code == 403 and "admin" in r.json()["error"]
    assert value(scrape(client), "memsvc_database_up") == 1.0


def test_public_metrics_need_no_key(limited: TestClient) -> None:
    assert value(scrape(limited, key=None), "memsvc_database_up") == 1.0


def test_request_latency_is_labelled_by_route_template_never_by_user(client: TestClient) -> None:
    key, user = make_tenant_key(client), unique("metrics-user")
    ingest(client, key, user, "s1", [message("m1", SUPPORT_GROUP)])
    before = scrape(client)
    search(client, key, user, "support group")
    search(client, key, user, "support group")
    r = client.get(f"/v1/users/{unique('nobody')}", headers=auth(key))
    assert r.status_code == 404
    after = scrape(client)

    labels = {"method": "POST", "route": SEARCH_ROUTE, "status": "200"}
    name = "memsvc_http_request_duration_seconds_count"
    assert value(after, name, **labels) == value(before, name, **labels) + 2
    assert value(after, "memsvc_http_request_duration_seconds_sum", **labels) > 0
    not_found = {"method": "GET", "route": "/v1/users/{user_id}", "status": "404"}
    assert value(after, name, **not_found) >= 1
    text = client.get("/metrics", headers=auth(ADMIN_KEY)).text
    assert user not in text and "nobody" not in text


def test_queue_depth_and_job_outcomes_follow_an_ingest(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    before = scrape(client)
    ingest(client, key, user, "s1", [message("m1", SUPPORT_GROUP), message("m2", "And I met Melanie there.")])
    queued = scrape(client)
    assert value(queued, "memsvc_jobs", status="queued") == value(before, "memsvc_jobs", status="queued") + 1
    todo = {"task": "build_memory", "status": "todo"}
    assert value(queued, "memsvc_queue_jobs", **todo) >= value(before, "memsvc_queue_jobs", **todo) + 1

    drain(settings, database_url)
    done = scrape(client)
    assert value(done, "memsvc_jobs", status="done") >= value(before, "memsvc_jobs", status="done") + 1
    assert value(done, "memsvc_queue_jobs", **todo) == 0
    # The duration histogram counts exactly the done rows, and this job took more than nothing.
    count = value(done, "memsvc_job_duration_seconds_count", status="done")
    assert count == value(done, "memsvc_jobs", status="done")
    assert value(done, "memsvc_job_duration_seconds_sum", status="done") > 0
    assert value(done, "memsvc_job_duration_seconds_bucket", status="done", le="+Inf") == count


def test_index_gauges_match_the_faiss_index(
    client: TestClient, settings: Settings, database_url: str
) -> None:
    key, user = make_tenant_key(client), unique("u")
    ingest(client, key, user, "s1", [message("m1", SUPPORT_GROUP)])
    drain(settings, database_url)
    state = app_state(client)
    with state.factory() as session:
        recall.refresh_index(session, state.index)
    samples = scrape(client)
    model = state.index.model
    assert value(samples, "memsvc_index_vectors", model=model) == state.index.count() > 0
    assert value(samples, "memsvc_index_users", model=model) == len(state.index.counts()) > 0


# --- request and job ids, structured logs ------------------------------------------------------


def test_request_id_is_echoed_when_plain_and_replaced_when_not(client: TestClient) -> None:
    r = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b_c"})
    assert r.headers["X-Request-ID"] == "trace-42.a:b_c"
    r = client.get("/healthz", headers={"X-Request-ID": "no spaces or {braces} please" + "x" * 80})
    assert len(r.headers["X-Request-ID"]) == 32 and " " not in r.headers["X-Request-ID"]
    fresh = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(fresh) == 3  # a new id for every request that brings none


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Every line logged during the test, as memsvc's JSON handler writes it."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_json_log_lines_carry_the_request_and_the_job_id(
    client: TestClient, settings: Settings, database_url: str, json_log: io.StringIO
) -> None:
    key, user = make_tenant_key(client), unique("u")
    r = client.post(
        f"/v1/users/{user}/sessions/s1/messages",
        json={"messages": [message("m1", SUPPORT_GROUP)]},
        headers={**auth(key), "X-Request-ID": "req-ingest-1"},
    )
    assert r.status_code == 202 and r.headers["X-Request-ID"] == "req-ingest-1"
    job = r.json()["job_id"]
    drain(settings, database_url)

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    ingest_lines = [ln for ln in lines if ln["message"].startswith("ingest ") and user in ln["message"]]
    assert ingest_lines and all(ln.get("request_id") == "req-ingest-1" for ln in ingest_lines)
    access = [
        ln for ln in lines if ln["logger"] == "memsvc.access" and ln.get("request_id") == "req-ingest-1"
    ]
    assert access and "/v1/users/{user_id}/sessions/{session_id}/messages 202" in access[0]["message"]
    built = [ln for ln in lines if ln["logger"] == "memsvc.construct" and job in ln["message"]]
    assert built and all(ln.get("job_id") == job for ln in built)
    assert not any(ln.get("job_id") for ln in ingest_lines)


def test_no_secret_reaches_any_log_line(
    client: TestClient,
    database_url: str,
    json_log: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = client.post(
        "/v1/admin/keys", json={"tenant": unique("t"), "name": "n"}, headers=auth(ADMIN_KEY)
    )
    assert created.status_code == 201
    key, user = created.json()["key"], unique("u")
    bogus = "msk_" + "Q" * 43
    llm_key = "sk-llm-secret-" + "Z" * 20

    ingest(client, key, user, "s1", [message("m1", SUPPORT_GROUP)])
    search(client, key, user, "support group")
    assert client.get(f"/v1/users/{user}", headers=auth(bogus)).status_code == 401
    assert client.post("/v1/admin/keys", json={"tenant": "x"}, headers=auth(key)).status_code == 403
    assert client.get(f"/v1/users/{user}", headers=auth(ADMIN_KEY)).status_code == 403
    bad = client.post(f"/v1/users/{user}/search", content=b'{"query": ', headers=auth(key))
    assert bad.status_code == 422
    assert client.get("/metrics", headers=auth(ADMIN_KEY)).status_code == 200
    with fake_llm(Reply(status=500)) as llm:  # the LLM call fails and is logged: its key is not
        drain(
            make_settings(
                database_url,
                extractor="llm",
                llm_base_url=llm.base_url,
                llm_model="m",
                llm_api_key=llm_key,
                llm_timeout_s=2.0,
            ),
            database_url,
        )
    assert llm.requests and llm.headers[0].get("authorization") == f"Bearer {llm_key}"

    logged = caplog.text + json_log.getvalue()
    logged += "".join(r.getMessage() for r in caplog.records)
    assert "ingest " in logged and "llm extraction failed" in logged  # the lines were captured
    for secret in (key, key[10:], bogus, ADMIN_KEY, llm_key):
        assert secret not in logged


def test_a_database_url_is_logged_without_its_password() -> None:
    assert (
        logs.mask_url("postgresql://memsvc:hunter2@db:5432/memsvc")
        == "postgresql://memsvc:***@db:5432/memsvc"
    )
    assert logs.mask_url("postgresql://memsvc@db/memsvc") == "postgresql://memsvc@db/memsvc"


def test_a_crash_is_a_json_500_with_its_request_id_logged(
    limited: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> None:
        raise RuntimeError("kaboom")

    limited.app.add_api_route("/boom/{thing}", boom)  # type: ignore[attr-defined]  # a FastAPI app
    r = limited.get("/boom/x", headers={"X-Request-ID": "crash-1"})
    assert r.status_code == 500 and r.headers["X-Request-ID"] == "crash-1"
    assert r.json() == {"error": "internal error", "detail": {"request_id": "crash-1"}}
    crash = [rec for rec in caplog.records if rec.exc_info and "kaboom" in str(rec.exc_info[1])]
    assert crash and "GET /boom/{thing}" in crash[0].getMessage()
    samples = scrape(limited, key=None)
    name = "memsvc_http_request_duration_seconds_count"
    assert value(samples, name, method="GET", route="/boom/{thing}", status="500") == 1


# --- rate limits, CORS --------------------------------------------------------------------------


def test_rate_limit_per_key_answers_429_with_retry_after(limited: TestClient) -> None:
    first, second = make_tenant_key(limited), make_tenant_key(limited)
    for _ in range(3):  # the burst
        assert limited.get("/v1/users/nobody", headers=auth(first)).status_code == 404
    r = limited.get("/v1/users/nobody", headers=auth(first))
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"] == "1"
    assert "rate limit" in r.json()["error"] and r.json()["detail"]["retry_after_s"] > 0

    assert limited.get("/v1/users/nobody", headers=auth(second)).status_code == 404  # its own bucket
    for _ in range(10):  # the operator's key is never limited
        assert limited.get("/v1/users/nobody", headers=auth(ADMIN_KEY)).status_code == 403

    time.sleep(float(r.headers["Retry-After"]))
    assert limited.get("/v1/users/nobody", headers=auth(first)).status_code == 404
    assert limited.get("/v1/users/nobody", headers=auth(first)).status_code == 429


def test_no_cors_headers_are_ever_sent(client: TestClient) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    r = client.options("/v1/users/u/search", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert r.status_code == 405 and "error" in r.json()
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


# --- no telemetry ------------------------------------------------------------------------------

# Runs in a fresh process (so nothing is imported or loaded yet) with outbound network blocked and
# recorded: the app starts, a key is made, messages are ingested and built by a worker, searched,
# and /metrics scraped. Anything that tried to reach a non-loopback address is listed.
PROBE = r"""
import ipaddress, json, socket, sys

attempts = []

def local(host):
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not local(address[0]):
        attempts.append(f"connect {address!r}")
        raise OSError("outbound connection blocked by the test")
    return real_connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    if not local(host if isinstance(host, str) or host is None else host.decode()):
        attempts.append(f"resolve {host!r}")
        raise socket.gaierror("name resolution blocked by the test")
    return real_getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

from fastapi.testclient import TestClient
from memsvc import jobs
from memsvc.main import create_app
from memsvc.settings import Settings

url, data_dir = sys.argv[1], sys.argv[2]
settings = Settings(database_url=url, data_dir=data_dir, admin_key="probe-admin-key")
admin = {"Authorization": "Bearer probe-admin-key"}
message = {"id": "m1", "role": "user", "speaker": "Caroline", "created_at": "2023-05-08T13:56:00+00:00",
           "content": "I went to a LGBTQ support group yesterday and it was so powerful."}
with TestClient(create_app(settings, url)) as client:
    key = client.post("/v1/admin/keys", json={"tenant": "probe"}, headers=admin).json()["key"]
    tenant = {"Authorization": f"Bearer {key}"}
    assert client.post("/v1/users/u/sessions/s/messages", json={"messages": [message]},
                       headers=tenant).status_code == 202
    jobs.run_worker(settings, url, burst=True)
    hits = client.post("/v1/users/u/search", json={"query": "support group"}, headers=tenant).json()["hits"]
    assert client.get("/metrics", headers=admin).status_code == 200

import huggingface_hub.constants
print("PROBE " + json.dumps({
    "attempts": attempts,
    "hits": len(hits),
    "hf_telemetry_disabled": huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY,
}))
"""


def test_nothing_is_sent_anywhere_while_serving(new_database: Callable[[], str]) -> None:
    url = new_database()
    # As an operator would start it: none of the opt-out variables set by hand.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "MEMSVC_", "OTEL_", "FASTAPI_")) and k != "DO_NOT_TRACK"
    }
    env["FASTAPI_OTEL_AUTO_CONFIGURE"] = "true"  # memsvc must keep FastAPI's exporters off even so
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector.example:4318"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, str(short_tmp_dir("probe"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("PROBE "))[6:])
    assert result["hits"] > 0  # the probe really served
    assert result["attempts"] == []
    assert result["hf_telemetry_disabled"] is True
