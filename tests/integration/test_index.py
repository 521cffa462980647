"""The FAISS index is a cache of Postgres: persisted files agree with a rebuild, and any damaged,
foreign or out-of-step files are rebuilt from Postgres at start instead of being trusted."""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np
import pytest
from factories import cited, drain, ingest, make_settings, make_tenant_key, message, search, unique
from fastapi.testclient import TestClient

from memsvc import recall, store
from memsvc.index import VectorIndex
from memsvc.main import create_app
from memsvc.settings import Settings
from memsvc.state import AppState

FACTS = [
    "I adopted a greyhound named Comet from the shelter on Saturday.",
    "My sister Rosa moved to Lisbon to work as an architect.",
    "I started pottery classes at the community studio downtown.",
]


@contextmanager
def running_app(settings: Settings) -> Iterator[tuple[TestClient, AppState]]:
    assert settings.database_url
    with TestClient(create_app(settings, settings.database_url)) as client:
        yield client, client.app.state.memsvc  # type: ignore[attr-defined]  # set by the lifespan


def postgres_counts(state: AppState) -> dict[int, int]:
    with state.factory() as session:
        return store.vector_counts(session, state.index.model)


def caught_up_counts(state: AppState) -> dict[int, int]:
    with state.factory() as session:
        recall.refresh_index(session, state.index)
    return state.index.counts()


def vectors_of(index: VectorIndex, user_id: int) -> dict[int, np.ndarray]:
    raw = index._users[user_id]  # the per-user FAISS index: reconstruct each stored vector by id
    return {i: raw.reconstruct(i) for i in index.ids(user_id)}


@pytest.fixture
def populated(database_url: str) -> Callable[[], tuple[Settings, str, str]]:
    """Factory: an app's data dir whose index holds a fresh user's memory; the app is closed after."""

    def make() -> tuple[Settings, str, str]:
        settings = make_settings(database_url)
        with running_app(settings) as (client, _):
            key, user = make_tenant_key(client), unique("u")
            ingest(client, key, user, "s1", [message(f"f{i}", t) for i, t in enumerate(FACTS)])
            drain(settings, database_url)
            assert "f0" in cited(search(client, key, user, "What is the name of the dog?"))
        assert len(list(settings.index_dir.rglob("manifest.json"))) == 1
        return settings, key, user

    return make


def manifest_path(settings: Settings) -> Any:
    (path,) = settings.index_dir.rglob("manifest.json")
    return path


def test_live_index_holds_exactly_what_postgres_holds(
    populated: Callable[[], tuple[Settings, str, str]],
) -> None:
    settings, _, _ = populated()
    with running_app(settings) as (_, state):
        expected = postgres_counts(state)
        assert expected and caught_up_counts(state) == expected


def test_persisted_index_equals_a_rebuild_from_postgres(
    populated: Callable[[], tuple[Settings, str, str]],
) -> None:
    settings, _, _ = populated()
    with running_app(settings) as (_, state):
        model, dim = state.index.model, state.index.dim
        rebuilt = VectorIndex(model, dim, None)
        with state.factory() as session:
            recall.rebuild_index(session, rebuilt)
            expected = store.vector_counts(session, model)
    persisted = VectorIndex(model, dim, settings.index_dir)
    assert persisted.load()
    assert persisted.counts() == rebuilt.counts() == expected
    for user_id in expected:
        assert persisted.ids(user_id) == rebuilt.ids(user_id)
        mine, theirs = vectors_of(persisted, user_id), vectors_of(rebuilt, user_id)
        assert all(np.array_equal(mine[i], theirs[i]) for i in mine)
    assert persisted.seq == rebuilt.seq


def _write_foreign_index(settings: Settings, *, model: str | None, dim: int) -> None:
    """Replace the files by an index of `dim`-sized vectors with the same ids (and maybe another model)."""
    path = manifest_path(settings)
    manifest = json.loads(path.read_text())
    rng = np.random.default_rng(0)
    for user_id in manifest["users"]:
        file = path.parent / f"u{user_id}.faiss"
        old = faiss.read_index(str(file))
        ids = np.array([old.id_map.at(i) for i in range(old.ntotal)], dtype=np.int64)
        new = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        new.add_with_ids(rng.standard_normal((len(ids), dim)).astype(np.float32), ids)
        faiss.write_index(new, str(file))
    manifest.update(dim=dim, **({"model": model} if model else {}))
    path.write_text(json.dumps(manifest))


def _damage(settings: Settings, how: str) -> None:
    path = manifest_path(settings)
    if how == "missing manifest":
        path.unlink()
    elif how == "corrupt manifest":
        path.write_text('{"model": "trunc')
    elif how == "corrupt user file":
        for file in path.parent.glob("u*.faiss"):
            file.write_bytes(b"\x00garbage" * 10)
    elif how == "missing user file":
        for file in path.parent.glob("u*.faiss"):
            file.unlink()
    elif how == "another model":
        _write_foreign_index(settings, model="someone/other-model", dim=8)
    elif how == "another dimension":
        _write_foreign_index(settings, model=None, dim=8)
    else:
        raise AssertionError(how)


DAMAGE = [
    "missing manifest",
    "corrupt manifest",
    "corrupt user file",
    "missing user file",
    "another model",
    "another dimension",
]


@pytest.mark.parametrize("how", DAMAGE)
def test_damaged_or_foreign_index_files_are_rebuilt(
    populated: Callable[[], tuple[Settings, str, str]], how: str
) -> None:
    settings, key, user = populated()
    _damage(settings, how)
    with running_app(settings) as (client, state):
        assert "f0" in cited(search(client, key, user, "What is the name of the dog?"))
        assert state.index.counts() == postgres_counts(state)
        assert state.index.dim == json.loads(manifest_path(settings).read_text())["dim"]
    # ...and the files were rewritten good: they load again as they are.
    reloaded = VectorIndex(state.index.model, state.index.dim, settings.index_dir)
    assert reloaded.load() and reloaded.counts() == postgres_counts(state)


def test_index_files_ahead_of_the_database_are_rebuilt(
    populated: Callable[[], tuple[Settings, str, str]], database_url: str
) -> None:
    """Files that claim changes the database never had (a restored backup, another database):
    trusting them would skip the next changes, so new memory would never become searchable."""
    settings, key, user = populated()
    path = manifest_path(settings)
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "seq": manifest["seq"] + 100_000}))
    with running_app(settings) as (client, state):
        with state.factory() as session:
            assert state.index.seq <= store.last_change_seq(session)
        ingest(client, key, user, "s2", [message("new", "I bought a red kayak for the summer trip.")])
        drain(settings, database_url)
        assert "new" in cited(search(client, key, user, "What kind of boat did I buy?"))


def test_index_files_behind_the_database_catch_up(
    populated: Callable[[], tuple[Settings, str, str]], database_url: str
) -> None:
    """Memory built while this API process was down is searchable as soon as it is back."""
    settings, key, user = populated()
    other = make_settings(database_url)  # another API process writes meanwhile
    with running_app(other) as (client, _):
        ingest(client, key, user, "s2", [message("late", "I bought a red kayak for the summer trip.")])
        drain(other, database_url)
    with running_app(settings) as (client, state):
        assert "late" in cited(search(client, key, user, "What kind of boat did I buy?"))
        assert caught_up_counts(state) == postgres_counts(state)
