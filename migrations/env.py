"""Alembic environment: runs migrations online against the URL memsvc.db.migrate passes in."""

from alembic import context
from sqlalchemy import create_engine, pool, text

from memsvc.tables import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "memsvc.db.migrate sets sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            # Processes that start at once (API replicas, a serve beside a worker) must not both
            # migrate: the second waits here until the first commits, then finds the schema current.
            connection.execute(text("SELECT pg_advisory_xact_lock(7264001)"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("memsvc migrations run online only: use `memsvc migrate`")
run_migrations_online()
