"""`memsvc serve` as users run it: real processes, the embedded PostgreSQL, signals and crashes."""

import os
import signal
import time
from collections.abc import Callable

import psycopg
import pytest
from factories import (
    auth,
    cited,
    ingest,
    job_status,
    make_tenant_key,
    message,
    search,
    short_tmp_dir,
    start_worker,
    stop_process,
    unique,
    wait_for_job,
)
from processes import Serve, index_matches_postgres, postgres_running_under, socket_url


@pytest.mark.slow
def test_serve_keeps_data_across_a_restart_and_stops_its_database(serves: list[Serve]) -> None:
    data_dir = short_tmp_dir("me")
    serve = Serve(data_dir)
    serves.append(serve)
    serve.start()
    with serve.client() as http:
        key, user = make_tenant_key(http), unique("u")
        answer = ingest(
            http, key, user, "s1", [message("D1:3", "I went to a LGBTQ support group yesterday.")], wait=True
        )
        assert answer["accepted"] == 1
        assert "D1:3" in cited(search(http, key, user, "When did Caroline go to the support group?"))
    assert postgres_running_under(data_dir)

    assert serve.terminate() == 0, serve.tail()
    assert not postgres_running_under(data_dir), "the embedded PostgreSQL outlived serve"
    assert not list(data_dir.rglob("postmaster.pid"))
    assert not serve.workers()

    again = Serve(data_dir)
    serves.append(again)
    again.start()
    with again.client() as http:
        assert "D1:3" in cited(search(http, key, user, "When did Caroline go to the support group?"))
        assert job_status(http, key, answer["job_id"])["status"] == "done"


HOBBIES = ["pottery", "climbing", "chess", "sailing", "baking", "violin", "tango", "archery", "golf", "yoga"]
CITIES = ["Lisbon", "Osaka", "Quito", "Tallinn", "Nairobi", "Hobart", "Bergen", "Cusco", "Porto", "Hanoi"]
FRIENDS = ["Amara", "Bjorn", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas"]


def many_messages(n: int) -> list[dict[str, str]]:
    return [
        message(
            f"D{i // 20 + 1}:{i % 20 + 1}",
            f"On day {i} I did {HOBBIES[i % 10]} with {FRIENDS[(i // 10) % 10]} in {CITIES[i // 100 % 10]}, "
            "and we planned to meet again next month to practise some more and eat dumplings.",
            speaker=FRIENDS[i % 2],
        )
        for i in range(n)
    ]


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_and_duplicates_nothing(serves: list[Serve]) -> None:
    data_dir = short_tmp_dir("me")
    serve = Serve(data_dir)
    serves.append(serve)
    serve.start()
    batch = many_messages(300)
    with serve.client() as http:
        key, user = make_tenant_key(http), unique("u")
        job_id = ingest(http, key, user, "s1", batch)["job_id"]
        deadline = time.monotonic() + 90
        while job_status(http, key, job_id)["status"] != "running":
            assert time.monotonic() < deadline, serve.tail()
            time.sleep(0.05)
        (worker,) = serve.workers()
        os.kill(worker, signal.SIGKILL)
        assert job_status(http, key, job_id)["status"] == "running", "the job ended before the kill"

        # serve starts a new worker; the dead one's job is queued again once its heartbeat is stale.
        job = wait_for_job(http, key, job_id, timeout=150)
        assert job["status"] == "done", (job, serve.tail())
        assert job["attempts"] >= 2, "the job was run again after the kill"
        assert worker not in serve.workers() and len(serve.workers()) == 1
        for m in (batch[0], batch[151], batch[299]):
            assert m["id"] in cited(search(http, key, user, m["content"], limit=10)), m

    with psycopg.connect(socket_url(data_dir / "pg")) as conn:
        (uid,) = conn.execute("SELECT id FROM end_user WHERE external_id = %s", (user,)).fetchone() or ()
        assert conn.execute("SELECT count(*) FROM message WHERE user_id = %s", (uid,)).fetchone() == (300,)
        per_message = conn.execute(
            "SELECT m, count(*) FROM memory_unit, unnest(source_message_ids) AS m "
            "WHERE user_id = %s AND kind = 'message' GROUP BY m",
            (uid,),
        ).fetchall()
    assert dict(per_message) == {m["id"]: 1 for m in batch}, "every message is memory exactly once"

    # Stopped cleanly, the index files hold exactly the vectors Postgres holds: none lost, none twice.
    assert serve.terminate() == 0, serve.tail()
    assert index_matches_postgres(data_dir)[uid] >= 300


def test_two_api_processes_and_one_worker_share_one_database(
    new_database: Callable[[], str], serves: list[Serve]
) -> None:
    url = new_database()
    api_1 = Serve(short_tmp_dir("me"), MEMSVC_DATABASE_URL=url, MEMSVC_WORKERS="0")
    api_2 = Serve(short_tmp_dir("me"), MEMSVC_DATABASE_URL=url, MEMSVC_WORKERS="0")
    serves += [api_1, api_2]
    worker = start_worker(url, short_tmp_dir("mw"), log=api_1.data_dir / "worker.log")
    try:
        api_1.start()
        api_2.start()
        assert not api_1.workers() and not api_2.workers()
        assert not postgres_running_under(api_1.data_dir) and not postgres_running_under(api_2.data_dir)
        with api_1.client() as one, api_2.client() as two:
            key, user = make_tenant_key(one), unique("u")
            job_id = ingest(
                one, key, user, "s1", [message("D1:2", "I adopted a greyhound named Comet on Saturday.")]
            )["job_id"]
            assert wait_for_job(two, key, job_id, timeout=120)["status"] == "done"
            assert "D1:2" in cited(search(two, key, user, "What is the name of the greyhound?"))

            # wait:true through API 2 makes the memory searchable through API 1 at once, too.
            ingest(two, key, user, "s2", [message("D2:1", "I finished my first pottery vase.")], wait=True)
            assert "D2:1" in cited(search(one, key, user, "What did I make in pottery?"))

            # Erasure through one API is erasure in the other.
            assert one.delete(f"/v1/users/{user}", headers=auth(key)).status_code == 204
            r = two.post(f"/v1/users/{user}/search", json={"query": "greyhound"}, headers=auth(key))
            assert r.status_code == 404
    finally:
        assert stop_process(worker) == 0
