"""The composition root: builds every long-lived resource of an API process once, and closes it."""

import logging
import threading
import time
from dataclasses import dataclass, field

import procrastinate
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from memsvc import recall
from memsvc.db import make_engine, make_session_factory
from memsvc.embed import Embedder, get_embedder
from memsvc.index import VectorIndex
from memsvc.jobs import make_app
from memsvc.ratelimit import RateLimiter
from memsvc.settings import Settings

log = logging.getLogger(__name__)

SAVE_EVERY_S = 30.0


@dataclass
class AppState:
    settings: Settings
    database_url: str
    engine: Engine
    factory: sessionmaker[Session]
    embedder: Embedder
    index: VectorIndex
    queue: procrastinate.App
    limiter: RateLimiter = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _syncer: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_limit_per_s, self.settings.rate_limit_burst)

    @classmethod
    def open(cls, settings: Settings, database_url: str) -> "AppState":
        engine = make_engine(database_url)
        factory = make_session_factory(engine)
        embedder = get_embedder(
            settings.embed_model, settings.embed_device, settings.embed_batch_size, settings.embed_threads
        )
        index = VectorIndex(embedder.model_name, embedder.dim, settings.index_dir)
        with factory() as session:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            with index.refresh_lock:
                recall.open_index(session, index)
        index.save()
        state = cls(settings, database_url, engine, factory, embedder, index, make_app(database_url))
        state._syncer = threading.Thread(target=state._sync_loop, name="index-sync", daemon=True)
        state._syncer.start()
        return state

    def _sync_loop(self) -> None:
        """Keep the index warm between searches, and persist it now and then."""
        last_save = time.monotonic()
        saved_seq = self.index.seq
        while not self._stop.wait(self.settings.index_sync_interval_s):
            try:
                with self.factory() as session:
                    recall.refresh_index(session, self.index)
                if self.index.seq != saved_seq and time.monotonic() - last_save > SAVE_EVERY_S:
                    self.index.save()
                    saved_seq, last_save = self.index.seq, time.monotonic()
            except Exception as exc:  # the database may be restarting: try again next tick
                log.warning("index sync failed: %s", exc)

    def database_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=10)
        try:
            with self.factory() as session:
                recall.refresh_index(session, self.index)
        except Exception as exc:
            log.warning("final index sync failed: %s", exc)
        self.index.save()
        self.engine.dispose()
