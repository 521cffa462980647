"""Faults while clients ingest: `memsvc serve` killed outright, the database restarted under it,
an LLM endpoint that fails. Accepted messages must end in memory exactly once, every time."""

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from factories import (
    auth,
    cited,
    job_status,
    make_tenant_key,
    message,
    search,
    short_tmp_dir,
    unique,
    wait_for_job,
)
from processes import Serve, index_matches_postgres, postgres_running_under, socket_url, stop_postgres_under

from memsvc.db import EmbeddedPostgres

BATCH = 5
TOPICS = ["pottery", "climbing", "chess", "sailing", "baking", "violin", "tango", "archery"]


def batch_messages(n: int) -> list[dict[str, Any]]:
    return [
        message(f"B{n}:{i}", f"In batch {n} part {i} Mel talked about {TOPICS[(n + i) % 8]} lesson {n}{i}.")
        for i in range(BATCH)
    ]


@dataclass
class IngestLoop:
    """A client posting batches of new messages back to back, as an agent would, from a thread.

    It records what the service answered to each batch: accepted (202, with its job), refused
    (any other status), or unanswered (the connection failed). Later `resend` posts every batch
    that was not accepted again, as a retrying client does.
    """

    url: str
    key: str
    user: str
    accepted: dict[int, str] = field(default_factory=dict)  # batch number -> job id
    statuses: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # bodies of non-202 answers
    sent: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def post(self, http: httpx.Client, n: int) -> None:
        try:
            r = http.post(
                f"/v1/users/{self.user}/sessions/s1/messages",
                json={"messages": batch_messages(n)},
                headers=auth(self.key),
            )
        except httpx.HTTPError:
            return
        self.statuses.append(r.status_code)
        if r.status_code == 202:
            self.accepted[n] = r.json()["job_id"]
        else:
            self.errors.append({"status": r.status_code, "body": r.json()})

    def start(self) -> "IngestLoop":
        def run() -> None:
            with httpx.Client(base_url=self.url, timeout=10) as http:
                while not self._stop.is_set():
                    self.post(http, self.sent)
                    self.sent += 1
                    time.sleep(0.05)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def resend(self, http: httpx.Client) -> None:
        for n in range(self.sent):
            if n not in self.accepted:
                self.post(http, n)
        assert len(self.accepted) == self.sent, self.errors[-3:]

    def wait_until(self, accepted: int, timeout: float = 120, log: Callable[[], str] = str) -> None:
        deadline = time.monotonic() + timeout
        while len(self.accepted) < accepted:
            assert time.monotonic() < deadline, f"{len(self.accepted)} accepted; {self.errors[-1:]}\n{log()}"
            time.sleep(0.05)


def assert_each_message_is_memory_once(database_url: str, user: str, batches: int) -> None:
    with psycopg.connect(database_url) as conn:
        (uid,) = conn.execute("SELECT id FROM end_user WHERE external_id = %s", (user,)).fetchone() or ()
        messages = conn.execute(
            "SELECT external_id, count(*) FROM message WHERE user_id = %s GROUP BY 1", (uid,)
        ).fetchall()
        units = conn.execute(
            "SELECT m, count(*) FROM memory_unit, unnest(source_message_ids) AS m "
            "WHERE user_id = %s AND kind = 'message' GROUP BY m",
            (uid,),
        ).fetchall()
    expected = {m["id"]: 1 for n in range(batches) for m in batch_messages(n)}
    assert dict(messages) == expected, "every message stored exactly once"
    assert dict(units) == expected, "every message is memory exactly once"


def wait_all_done(http: httpx.Client, loop: IngestLoop) -> None:
    for job_id in loop.accepted.values():
        job = wait_for_job(http, loop.key, job_id, timeout=240)
        assert job["status"] == "done", job


@pytest.mark.slow
def test_serve_killed_mid_ingest_keeps_every_accepted_message_once(serves: list[Serve]) -> None:
    data_dir = short_tmp_dir("me")
    serve = Serve(data_dir)
    serves.append(serve)
    serve.start()
    with serve.client() as http:
        key, user = make_tenant_key(http), unique("u")
    loop = IngestLoop(serve.url, key, user).start()
    loop.wait_until(accepted=8)

    with serve.client() as http:
        jobs = list(loop.accepted.values())  # a snapshot: the client thread goes on adding
        unfinished = [j for j in jobs if job_status(http, key, j)["status"] != "done"]
    assert unfinished, "every job was done before the kill: nothing is tested"

    # Power loss: the whole tree at once, the API, its workers and the embedded PostgreSQL too.
    postmasters = postgres_running_under(data_dir)
    assert serve.proc is not None
    os.killpg(serve.proc.pid, signal.SIGKILL)
    for pid in postmasters:
        os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    loop.stop()
    accepted_before = dict(loop.accepted)
    assert accepted_before and loop.sent > len(accepted_before) - 1

    again = Serve(data_dir)
    serves.append(again)
    again.start()
    with again.client() as http:
        loop.url = again.url
        loop.resend(http)  # a retrying client: batches that got no answer are posted again
        wait_all_done(http, loop)
        for n in (0, loop.sent - 1):
            first = batch_messages(n)[0]
            assert first["id"] in cited(search(http, key, user, first["content"], limit=10))
    assert_each_message_is_memory_once(socket_url(data_dir / "pg"), user, loop.sent)
    assert set(accepted_before.items()) <= set(loop.accepted.items()), "an accepted job id changed"

    assert again.terminate() == 0, again.tail()
    index_matches_postgres(data_dir)


@pytest.fixture
def restartable_postgres() -> Iterator[Path]:
    """A PostgreSQL the test may stop and start again (same socket, so the same URL)."""
    directory = short_tmp_dir("mr")
    EmbeddedPostgres(directory)
    yield directory / "pg"
    stop_postgres_under(directory)


@pytest.mark.slow
def test_database_restart_during_ingest_is_503_then_recovers_by_itself(
    serves: list[Serve], restartable_postgres: Path
) -> None:
    url = socket_url(restartable_postgres)
    serve = Serve(short_tmp_dir("me"), MEMSVC_DATABASE_URL=url, MEMSVC_WORKERS="1")
    serves.append(serve)
    serve.start()
    with serve.client() as http:
        key, user = make_tenant_key(http), unique("u")
        loop = IngestLoop(serve.url, key, user).start()
        loop.wait_until(accepted=4)

        EmbeddedPostgres(restartable_postgres.parent).stop()
        down_since = time.monotonic()
        while len(loop.errors) < 5:  # the client keeps posting while the database is down
            assert time.monotonic() - down_since < 60, "no refusals while the database was down"
            time.sleep(0.1)
        r = http.post(f"/v1/users/{user}/search", json={"query": "pottery"}, headers=auth(key))
        assert r.status_code == 503 and "database" in r.json()["error"], r.text
        assert http.get("/healthz").status_code == 200, "the API process itself stays up"

        EmbeddedPostgres(restartable_postgres.parent)
        accepted_at_restart = len(loop.accepted)
        loop.wait_until(accepted=accepted_at_restart + 4, timeout=60, log=serve.tail)  # recovered alone
        loop.stop()

        assert {e["status"] for e in loop.errors} == {503}, loop.errors[:3]
        assert all("database" in e["body"]["error"] for e in loop.errors)
        loop.resend(http)
        wait_all_done(http, loop)
        last = batch_messages(loop.sent - 1)[0]
        assert last["id"] in cited(search(http, key, user, last["content"], limit=10))
    assert_each_message_is_memory_once(url, user, loop.sent)
