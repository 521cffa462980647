"""Plain-function test factories and process helpers (no fixtures here; see conftest.py)."""

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from memsvc import jobs
from memsvc.settings import Settings

ADMIN_KEY = "test-admin-key-0123456789"
# Small enough that a test can send an oversize body cheaply; the setting's floor is 1024.
MAX_BODY_BYTES = 256 * 1024
WHEN = "2023-05-08T13:56:00+00:00"

Client = TestClient | httpx.Client


def short_tmp_dir(prefix: str) -> Path:
    """A fresh directory with a short path (an embedded PostgreSQL's socket lives under it),
    removed when the test run ends."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    atexit.register(shutil.rmtree, path, True)
    return path


def database_url_named(server_url: str, name: str) -> str:
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": short_tmp_dir("md"),
        "admin_key": ADMIN_KEY,
        "max_body_bytes": MAX_BODY_BYTES,
        "index_sync_interval_s": 0.2,
        # Tests fire requests far faster than any agent; the rate-limit test sets its own limit.
        "rate_limit_per_s": 0,
        **overrides,
    }
    return Settings(**values)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_tenant_key(client: Client, tenant: str | None = None, admin_key: str = ADMIN_KEY) -> str:
    """A new key of a new (or the named) tenant, created through the admin API."""
    r = client.post(
        "/v1/admin/keys", json={"tenant": tenant or unique("tenant"), "name": "test"}, headers=auth(admin_key)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def message(
    id: str, content: str, *, role: str = "user", speaker: str | None = "Caroline", created_at: str = WHEN
) -> dict[str, Any]:
    m: dict[str, Any] = {"id": id, "role": role, "content": content, "created_at": created_at}
    if speaker is not None:
        m["speaker"] = speaker
    return m


def ingest(
    client: Client, key: str, user: str, session: str, messages: list[dict[str, Any]], *, wait: bool = False
) -> dict[str, Any]:
    """Post messages and check the answer is an accepted ingest (202, or 200 when waited on)."""
    r = client.post(
        f"/v1/users/{user}/sessions/{session}/messages",
        json={"messages": messages, "wait": wait},
        headers=auth(key),
    )
    assert r.status_code in ((200,) if wait else (202,)), r.text
    body: dict[str, Any] = r.json()
    return body


def search(client: Client, key: str, user: str, query: str, **options: Any) -> list[dict[str, Any]]:
    r = client.post(f"/v1/users/{user}/search", json={"query": query, **options}, headers=auth(key))
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()["hits"]
    return hits


def cited(hits: list[dict[str, Any]]) -> set[str]:
    """Every client message id the hits cite."""
    return {mid for h in hits for mid in h["source_message_ids"]}


def drain(settings: Settings, database_url: str) -> None:
    """Run every queued job to the end, in this process (a burst worker)."""
    jobs.run_worker(settings, database_url, burst=True)


def job_status(client: Client, key: str, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_for_job(client: Client, key: str, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = job_status(client, key, job_id)
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def user_row_id(conn: Any, tenant_key: str, external_user: str) -> int | None:
    """memsvc's internal id of a tenant's user (None if there is no such user)."""
    from memsvc.store import hash_key

    row = conn.execute(
        text(
            "SELECT u.id FROM end_user u JOIN api_key k ON k.tenant_id = u.tenant_id "
            "WHERE k.key_hash = :h AND u.external_id = :u"
        ),
        {"h": hash_key(tenant_key), "u": external_user},
    ).first()
    return int(row[0]) if row else None


# --- processes --------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any MEMSVC_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSVC_")}
    env.update(extra)
    return env


def start_worker(database_url: str, data_dir: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """A real `memsvc worker` process on `database_url` (stop it with stop_process)."""
    env = clean_env(MEMSVC_DATABASE_URL=database_url, MEMSVC_DATA_DIR=str(data_dir))
    out = open(log, "ab") if log else None  # noqa: SIM115  # handed to the child, closed with it
    return subprocess.Popen(
        [sys.executable, "-m", "memsvc", "worker"],
        env=env,
        start_new_session=True,
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int | None:
    """SIGTERM the process group, then SIGKILL what is left; returns the leader's exit code."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the rest of the group goes too
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.poll()
