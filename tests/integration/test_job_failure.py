"""A job that keeps failing is retried with backoff, then kept as failed with its error; never dropped."""

import time

import pytest
from factories import drain, ingest, job_status, make_settings, make_tenant_key, message, search, unique

from memsvc import construct


def test_a_failing_job_is_retried_then_kept_failed_with_its_error(
    client, database_url, monkeypatch: pytest.MonkeyPatch
):
    settings = make_settings(database_url, job_max_attempts=1)  # one retry after the first try
    key, user = make_tenant_key(client), unique("user")
    job_id = ingest(client, key, user, "s1", [message("f1", "I keep bees in my garden.")])["job_id"]

    calls = []

    def broken(*args, **kwargs):  # the fault: every build of this job raises
        calls.append(args)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(construct, "build_job", broken)
    drain(settings, database_url)
    first = job_status(client, key, job_id)
    # After the first failure the job waits for its retry, with the error visible.
    assert first["status"] == "queued" and "disk on fire" in first["error"]

    time.sleep(2.5)  # the retry is scheduled 2 s later (exponential backoff)
    drain(settings, database_url)
    final = job_status(client, key, job_id)
    assert len(calls) == 2
    assert final["status"] == "failed" and final["error"] == "RuntimeError: disk on fire"

    # The messages are kept: with the fault gone, a retry would build them (nothing was lost).
    monkeypatch.undo()
    assert search(client, key, user, "bees") == []
