"""The per-user index is exact while small and approximate (IVF) past its threshold, and either way
replays the change sequence correctly: adds idempotent, removes by id, files reload the same."""

from pathlib import Path

import numpy as np
import pytest

from memsvc.index import VectorIndex

DIM = 16  # low enough that IVF on uniformly random vectors is a fair test of recall
THRESHOLD = 1000


def random_unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, ids: np.ndarray, query: np.ndarray, k: int) -> set[int]:
    return {int(i) for i in ids[np.argsort(-(vectors @ query))[:k]]}


@pytest.fixture
def grown() -> tuple[VectorIndex, np.ndarray, np.ndarray]:
    """One user's index fed one change at a time past the threshold (as refresh_index does), then in bulk."""
    index = VectorIndex("test-model", DIM, None, approx_threshold=THRESHOLD)
    vectors = random_unit(4000, seed=1)
    ids = np.arange(4000, dtype=np.int64) * 3 + 1000  # Postgres-like: sparse, not 0..n-1
    for i in range(THRESHOLD + 10):
        index.add(7, ids[i : i + 1], vectors[i : i + 1])
    index.add(7, ids[THRESHOLD + 10 :], vectors[THRESHOLD + 10 :])
    return index, ids, vectors


def test_small_user_stays_exact_and_large_user_switches_to_ivf(
    grown: tuple[VectorIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, vectors = grown
    index.add(8, ids[:THRESHOLD - 1] + 1, vectors[: THRESHOLD - 1])
    assert index.index_type(8) == "Flat"
    assert index.index_type(7).startswith("IVF")
    assert index.count(7) == len(ids) and index.ids(7) == set(ids.tolist())
    query = vectors[123]
    assert index.search(7, query, 1)[0][0] == ids[123]  # a stored vector finds itself


def test_ivf_is_retrained_as_the_user_grows(grown: tuple[VectorIndex, np.ndarray, np.ndarray]) -> None:
    index, _, _ = grown
    lists_before = index.index_type(7)
    more = random_unit(20_000, seed=5)
    index.add(7, np.arange(20_000, dtype=np.int64) + 10**6, more)
    assert index.index_type(7) != lists_before
    assert index.count(7) == 24_000


def test_replayed_adds_leave_one_copy_and_removes_work(
    grown: tuple[VectorIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, vectors = grown
    index.add(7, ids[:50], vectors[:50])  # a change replayed
    index.add(7, ids[:1], vectors[1:2])  # an add that replaces a vector
    assert index.count(7) == len(ids)
    top2 = index.search(7, vectors[1], 2)  # both ids now hold the same vector
    assert {hit for hit, _ in top2} == {ids[0], ids[1]} and top2[0][1] == pytest.approx(1.0, abs=1e-5)
    index.remove(7, ids[:10].tolist())
    index.remove(7, ids[:10].tolist())  # replayed remove
    assert index.count(7) == len(ids) - 10
    assert index.ids(7).isdisjoint(ids[:10].tolist())
    assert ids[5] not in [hit for hit, _ in index.search(7, vectors[5], 10)]


def test_recall_at_10_against_exact_search_is_high(
    grown: tuple[VectorIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, vectors = grown
    queries = random_unit(200, seed=9)
    measured = index.approx_recall(7, queries, 10)
    by_hand = np.mean(
        [len({h for h, _ in index.search(7, q, 10)} & exact_top(vectors, ids, q, 10)) / 10 for q in queries]
    )
    assert measured >= 0.9
    assert measured == pytest.approx(by_hand, abs=0.02)


def test_ivf_files_reload_with_the_same_answers(
    grown: tuple[VectorIndex, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    index, ids, vectors = grown
    index.directory = tmp_path
    index.remove(7, [int(ids[0])])
    index.save()
    again = VectorIndex("test-model", DIM, None, approx_threshold=THRESHOLD)
    again.directory = tmp_path
    assert again.load()
    assert again.index_type(7) == index.index_type(7)
    assert again.ids(7) == index.ids(7)
    for q in random_unit(20, seed=3):
        assert again.search(7, q, 10) == index.search(7, q, 10)
    again.add(7, ids[:1], vectors[:1])  # removal by id still works after a reload
    again.add(7, ids[:1], vectors[:1])
    assert again.count(7) == len(ids)


def test_a_rebuilt_index_swapped_in_replaces_the_old_one_on_disk_too(tmp_path: Path) -> None:
    live = VectorIndex("test-model", DIM, tmp_path, approx_threshold=THRESHOLD)
    live.add(1, np.array([10, 11]), random_unit(2, seed=3))
    live.add(2, np.array([20]), random_unit(1, seed=4))
    live.seq = 5
    live.save()
    fresh = VectorIndex("test-model", DIM, None, approx_threshold=THRESHOLD)
    fresh.add(2, np.array([20, 21]), random_unit(2, seed=5))
    fresh.add(3, np.array([30]), random_unit(1, seed=6))
    fresh.seq, fresh.user_seq = 9, {2: 9, 3: 9}

    live.replace_with(fresh)
    assert live.counts() == {2: 2, 3: 1} and live.seq == 9 and live.user_seq == {2: 9, 3: 9}
    live.save()
    again = VectorIndex("test-model", DIM, tmp_path, approx_threshold=THRESHOLD)
    assert again.load() and again.counts() == {2: 2, 3: 1} and again.seq == 9
    assert sorted(p.name for p in (tmp_path / "test-model").glob("u*.faiss")) == ["u2.faiss", "u3.faiss"]
