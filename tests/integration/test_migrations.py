"""The migrations and the ORM models describe the same schema, and the migrations run both ways."""

import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from factories import database_url_named
from sqlalchemy import inspect

from memsvc.db import libpq_url, make_engine, migrate, sqlalchemy_url
from memsvc.tables import Base


def _ours(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """procrastinate's tables come from its own schema SQL, not from our models."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = name if type_ == "table" else getattr(table, "name", "")
    return not (table_name or "").startswith("procrastinate_")


def test_models_match_a_freshly_migrated_database(new_database: Callable[[], str]) -> None:
    engine = make_engine(new_database())
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": _ours, "compare_type": True, "compare_server_default": True}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == [], "models and migrations disagree; write a migration:\n" + "\n".join(
        map(str, differences)
    )


def test_migrate_is_idempotent_and_downgrade_removes_everything(new_database: Callable[[], str]) -> None:
    from alembic import command
    from alembic.config import Config

    from memsvc.db import MIGRATIONS_DIR

    url = new_database()
    migrate(url)  # a second run on an up-to-date database changes nothing and does not fail
    engine = make_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables and "procrastinate_jobs" in tables

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
        command.downgrade(cfg, "base")
        engine.dispose()
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

        migrate(url)
        engine.dispose()
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_processes_migrating_one_new_database_at_once_all_succeed(pg_server_url: str) -> None:
    name = f"memsvc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq_url(pg_server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = database_url_named(pg_server_url, name)
        code = f"from memsvc.db import migrate; migrate({url!r})"
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
        errors = [p.communicate(timeout=120)[1].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
    finally:
        with psycopg.connect(libpq_url(pg_server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("table", sorted(Base.metadata.tables))
def test_every_table_is_singular_snake_case_with_utc_timestamps(table: str) -> None:
    """House rule 5: every stored datetime is timezone-aware."""
    from sqlalchemy import DateTime

    for column in Base.metadata.tables[table].columns:
        if isinstance(column.type, DateTime):
            assert column.type.timezone, f"{table}.{column.name} is a naive timestamp"
