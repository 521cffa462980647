"""The index refresh lock and the connection pool: taken in one order, so they never deadlock.

Found by `memsvc bench load` (50 clients): the index-sync thread took the refresh lock and then
waited for a pooled connection, while every pooled connection was held by a search waiting for the
lock; requests stalled 30 s, until the pool's timeout failed some with 500s.
"""

import threading

from sqlalchemy import create_engine

from memsvc import recall
from memsvc.db import make_session_factory, sqlalchemy_url
from memsvc.index import VectorIndex


def test_a_refresh_waiting_for_a_connection_does_not_hold_the_lock(database_url: str) -> None:
    # One connection in the pool: the request below holds it, as a busy API's requests hold all.
    engine = create_engine(sqlalchemy_url(database_url), pool_size=1, max_overflow=0, pool_timeout=5)
    factory = make_session_factory(engine)
    index = VectorIndex("m", 384, None)
    errors: list[BaseException] = []

    def sync_loop_tick() -> None:
        try:
            with factory() as session:
                recall.refresh_index(session, index)
        except BaseException as exc:  # the pool timeout, if it held the lock while it waited
            errors.append(exc)

    try:
        with factory() as request_session:
            request_session.connection()  # the request's connection, checked out first
            syncer = threading.Thread(target=sync_loop_tick)
            syncer.start()
            syncer.join(0.5)  # it now waits for the pool, and must not be holding the lock
            assert index.refresh_lock.acquire(timeout=2), "the waiting refresh holds the lock"
            index.refresh_lock.release()
            recall.refresh_index(request_session, index)  # the request's own refresh goes through
        syncer.join(10)  # the connection is back in the pool: the other refresh finishes too
        assert not syncer.is_alive() and errors == []
    finally:
        engine.dispose()
