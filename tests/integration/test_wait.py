"""Ingest against a real `memsvc worker` process: `wait: true` blocks until the memory is searchable.

This module has its own database, app and worker, so the worker never takes the jobs the other
modules queue and then drain themselves (they assert the `queued` state in between).
"""

from collections.abc import Callable, Iterator

import pytest
from factories import (
    cited,
    ingest,
    job_status,
    make_settings,
    make_tenant_key,
    message,
    search,
    short_tmp_dir,
    start_worker,
    stop_process,
    unique,
    wait_for_job,
)
from fastapi.testclient import TestClient

from memsvc.main import create_app


@pytest.fixture(scope="module")
def worker_client(new_database: Callable[[], str]) -> Iterator[TestClient]:
    url = new_database()
    worker = start_worker(url, short_tmp_dir("mw"))
    try:
        with TestClient(create_app(make_settings(url), url)) as client:
            yield client
    finally:
        assert stop_process(worker) == 0, "the worker stops cleanly on SIGTERM"


def test_wait_true_returns_200_once_searchable(worker_client: TestClient) -> None:
    key, user = make_tenant_key(worker_client), unique("u")
    answer = ingest(
        worker_client,
        key,
        user,
        "s1",
        [message("D1:3", "I went to a LGBTQ support group yesterday and it was so powerful.")],
        wait=True,
    )
    assert answer["accepted"] == 1 and answer["status"] == "done"
    assert job_status(worker_client, key, answer["job_id"])["status"] == "done"
    # No sleep, no retry: searchable the moment the call returned.
    assert "D1:3" in cited(search(worker_client, key, user, "When did Caroline go to the support group?"))


def test_wait_true_with_only_duplicates_returns_at_once(worker_client: TestClient) -> None:
    key, user = make_tenant_key(worker_client), unique("u")
    batch = [message("a", "I adopted a greyhound named Comet from the shelter.")]
    ingest(worker_client, key, user, "s1", batch, wait=True)
    again = ingest(worker_client, key, user, "s1", batch, wait=True)
    assert again["accepted"] == 0 and again["duplicates"] == 1 and again["status"] == "done"


def test_wait_false_job_is_done_by_the_worker(worker_client: TestClient) -> None:
    key, user = make_tenant_key(worker_client), unique("u")
    answer = ingest(
        worker_client, key, user, "s1", [message("p1", "I painted a sunrise over the lake last weekend.")]
    )
    assert answer["status"] == "queued"
    job = wait_for_job(worker_client, key, answer["job_id"], timeout=90)
    assert job["status"] == "done" and job["error"] is None and job["attempts"] == 1
    assert "p1" in cited(search(worker_client, key, user, "What did Caroline paint?"))
