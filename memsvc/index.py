"""FAISS vector index: per-user indexes (exact while small, IVF past a size), a cache of Postgres.

FAISS ids are memory_unit ids. Files are written with faiss.write_index (never pickled) under the
data dir, with a manifest naming the model and the change sequence number they reflect.

Index type by size. A user's index is exact (IndexIDMap2 over IndexFlatIP) until it would hold
`approx_threshold` vectors; then it is rebuilt as an IndexIVFFlat (inner product) trained on that
user's own vectors, and retrained from them whenever it has grown 4x since (sqrt(n) lists doubled).
Why IVF rather than HNSW: the change sequence removes units by id. IVF removes natively, and a
hashtable direct map makes remove and reconstruct by id cheap; HNSW cannot remove at all, so it would
need a tombstone set filtered at search plus periodic rebuilds. IVF also trains and fills 1M vectors
in well under a minute on 2 cores where HNSW takes many minutes, and probing every list is an exact
search, which is how `approx_recall` compares against flat without a second copy of the vectors.
Flat stays below the threshold: exact, and a single-threaded scan of 50k x 384 floats takes ~10 ms.
"""

import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeGuard

import faiss
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# Vectors of one user past which their index becomes approximate (IVF).
APPROX_THRESHOLD = 50_000
# Lists ~ sqrt(n): k-means training and assignment stay under a minute at 1M on 2 cores, and a list
# holds ~sqrt(n) vectors. Probing 1/10 of the lists (at least 32) scans ~10% of the vectors: ~15 ms
# single-threaded at 1M x 384, for recall@10 ~1.0 on clustered (embedding-like) data. Uniformly
# random high-dimensional vectors, IVF's worst case, get far less; see approx_recall.
MIN_LISTS, MAX_LISTS = 16, 8192
PROBE_FRACTION, MIN_PROBES = 10, 32
TRAIN_PER_LIST = 64  # faiss wants >= 39 training points per centroid

Ids = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float32]


def _new_flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _lists_for(n: int) -> int:
    return int(min(MAX_LISTS, max(MIN_LISTS, round(math.sqrt(n)))))


def _new_ivf(vectors: Floats, seed: int = 1234) -> faiss.IndexIVFFlat:
    """An IVF index trained on (a sample of) `vectors`, empty, with removal by id enabled."""
    n, dim = vectors.shape
    lists = _lists_for(n)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    sample = vectors
    if n > lists * TRAIN_PER_LIST:
        rows = np.random.default_rng(seed).choice(n, lists * TRAIN_PER_LIST, replace=False)
        sample = vectors[np.sort(rows)]
    index.cp.seed = seed
    index.train(np.ascontiguousarray(sample))
    # Ids are arbitrary Postgres ids, so the hashtable map (the array map wants 0..n-1).
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # not in the stubs
    index.nprobe = min(lists, max(MIN_PROBES, lists // PROBE_FRACTION))
    return index


def _is_ivf(index: faiss.Index) -> TypeGuard[faiss.IndexIVF]:
    return isinstance(index, faiss.IndexIVF)


def _flat_map(index: faiss.Index) -> faiss.IndexIDMap2:
    assert isinstance(index, faiss.IndexIDMap2), type(index)
    return index


def _ivf_lists(index: faiss.IndexIVF) -> Iterator[tuple[Ids, npt.NDArray[np.uint8]]]:
    """(ids, codes) of each non-empty inverted list; for IVFFlat the codes are the raw float32s."""
    invlists = index.invlists
    assert invlists is not None
    for list_no in range(index.nlist):
        size = invlists.list_size(list_no)
        if size:
            ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * index.code_size)
            # Copies: the pointers are into the lists, which later adds and removes reallocate.
            yield ids.astype(np.int64), codes.copy()


def _contents(index: faiss.Index, dim: int) -> tuple[Ids, Floats]:
    """Every (id, vector) the index holds, in no particular order."""
    if _is_ivf(index):
        parts = list(_ivf_lists(index))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        ids = np.concatenate([p[0] for p in parts]).astype(np.int64)
        vectors = np.concatenate([p[1].view(np.float32).reshape(-1, dim) for p in parts])
        return ids, vectors
    flat = _flat_map(index)
    ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
    vectors = flat.index.reconstruct_n(0, flat.ntotal) if flat.ntotal else np.zeros((0, dim), np.float32)
    return ids, np.ascontiguousarray(vectors, dtype=np.float32)


def _remove(index: faiss.Index, ids: Ids) -> int:
    if _is_ivf(index):
        # The hashtable direct map only accepts an explicit id array (and then removes in O(ids)).
        return int(index.remove_ids(faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))))
    # A batch selector (a hash set) keeps removal O(n), not O(n x ids), for the flat map.
    return int(index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))))


def describe(index: faiss.Index) -> str:
    """The index type in faiss factory words, e.g. "Flat" or "IVF1000,Flat nprobe=62"."""
    if _is_ivf(index):
        return f"IVF{index.nlist},Flat nprobe={index.nprobe}"
    return "Flat"


class VectorIndex:
    """Per-user FAISS indexes plus the change sequence number they are in step with."""

    def __init__(
        self, model: str, dim: int, directory: Path | None, approx_threshold: int = APPROX_THRESHOLD
    ) -> None:
        self.model = model
        self.dim = dim
        self.approx_threshold = approx_threshold
        self.seq = 0
        # The sequence number of the last change applied per user: a cheap version of a user's
        # memory, which caches derived from it (BM25, graph) compare against.
        self.user_seq: dict[int, int] = {}
        self._users: dict[int, faiss.Index] = {}
        self._dirty: set[int] = set()
        self._dropped: set[int] = set()
        self._lock = threading.RLock()
        # Held by whoever applies the change sequence: two appliers interleaving could replay an
        # old "add" after a newer "drop_user" and bring an erased vector back.
        self.refresh_lock = threading.RLock()
        self.directory = directory / re.sub(r"[^A-Za-z0-9_.-]+", "_", model) if directory else None

    # --- changes ------------------------------------------------------------------------------

    def add(self, user_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors; replaying a change already applied changes nothing.

        Crossing the size threshold (or growing an IVF index 4x) rebuilds the user's index here,
        trained on all their vectors: seconds at 1M on 2 cores, searches of that user wait for it.
        """
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        with self._lock:
            index = self._users.get(user_id)
            if index is not None:
                _remove(index, ids)
            total = (int(index.ntotal) if index is not None else 0) + len(ids)
            if self._needs_ivf(index, total):
                if index is not None and index.ntotal:
                    old_ids, old_vectors = _contents(index, self.dim)
                    ids, vectors = np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors])
                index = self._users[user_id] = _new_ivf(vectors)
                log.info("user %d: %d vectors, index now %s", user_id, total, describe(index))
            elif index is None:
                index = self._users[user_id] = _new_flat(self.dim)
            index.add_with_ids(vectors, ids)
            self._dirty.add(user_id)
            # Back after a clear (a rebuild): save must write this user's file, not delete it.
            self._dropped.discard(user_id)

    def _needs_ivf(self, index: faiss.Index | None, total: int) -> bool:
        """A new IVF index is due: flat (or none) past the threshold, or IVF outgrown 4x."""
        if total < self.approx_threshold:
            return False
        if index is None or not _is_ivf(index):
            return True
        return _lists_for(total) >= 2 * int(index.nlist)

    def remove(self, user_id: int, ids: Iterable[int]) -> None:
        with self._lock:
            index = self._users.get(user_id)
            if index is not None:
                _remove(index, np.asarray(list(ids), dtype=np.int64))
                self._dirty.add(user_id)

    def drop_user(self, user_id: int) -> None:
        with self._lock:
            self._users.pop(user_id, None)
            self._dirty.discard(user_id)
            self._dropped.add(user_id)

    def clear(self) -> None:
        with self._lock:
            self._dropped.update(self._users)
            self._users.clear()
            self._dirty.clear()
            self.seq = 0

    def replace_with(self, other: "VectorIndex") -> None:
        """Take over `other`'s vectors and sequence numbers at once (a rebuild made beside this
        index): a search sees the old index or the new one, never a half-filled one."""
        with self._lock:
            self._dropped.update(set(self._users) - set(other._users))
            self._users = other._users
            self._dirty = set(other._users)
            self.seq, self.user_seq = other.seq, dict(other.user_seq)

    # --- queries ------------------------------------------------------------------------------

    def search(self, user_id: int, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        with self._lock:
            index = self._users.get(user_id)
            if index is None or index.ntotal == 0:
                return []
            scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def count(self, user_id: int | None = None) -> int:
        with self._lock:
            if user_id is not None:
                index = self._users.get(user_id)
                return int(index.ntotal) if index is not None else 0
            return sum(int(i.ntotal) for i in self._users.values())

    def counts(self) -> dict[int, int]:
        with self._lock:
            return {u: int(i.ntotal) for u, i in self._users.items() if i.ntotal > 0}

    def ids(self, user_id: int) -> set[int]:
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                return set()
            if _is_ivf(index):
                return {int(i) for ids, _ in _ivf_lists(index) for i in ids}
            return {int(i) for i in faiss.vector_to_array(_flat_map(index).id_map)}

    def index_type(self, user_id: int) -> str:
        """The index kind: "Flat", "IVF<lists>,Flat nprobe=<n>", or "none" for a user without vectors."""
        with self._lock:
            index = self._users.get(user_id)
            return describe(index) if index is not None else "none"

    def approx_recall(self, user_id: int, queries: np.ndarray, k: int = 10) -> float:
        """Mean recall@k of the user's index against exact search of the same vectors.

        1.0 for a flat index (it is the exact search). For IVF the exact answer is the same index
        probed in every list, so no second copy of the vectors is needed.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            index = self._users.get(user_id)
            if index is None or index.ntotal == 0 or not _is_ivf(index) or len(q) == 0:
                return 1.0
            _, approx = index.search(q, k)
            every_list = faiss.SearchParametersIVF()
            every_list.nprobe = int(index.nlist)
            _, exact = index.search(q, k, params=every_list)
        found = [
            len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) / max(1, int((e >= 0).sum()))
            for a, e in zip(approx, exact, strict=True)
        ]
        return float(np.mean(found))

    # --- persistence --------------------------------------------------------------------------

    def save(self) -> None:
        """Write changed users' indexes, then the manifest, each atomically (write + rename)."""
        if self.directory is None:
            return
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            for user_id in sorted(self._dirty):
                _atomic_write_index(self._users[user_id], self.directory / f"u{user_id}.faiss")
            for user_id in self._dropped:
                (self.directory / f"u{user_id}.faiss").unlink(missing_ok=True)
            manifest = {"model": self.model, "dim": self.dim, "seq": self.seq, "users": sorted(self._users)}
            tmp = self.directory / "manifest.json.tmp"
            tmp.write_text(json.dumps(manifest))
            os.replace(tmp, self.directory / "manifest.json")
            self._dirty.clear()
            self._dropped.clear()

    def load(self) -> bool:
        """Read the files back; False (and an empty index) if missing, unreadable or of another model."""
        if self.directory is None:
            return False
        manifest_path = self.directory / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest["model"] != self.model or manifest["dim"] != self.dim:
                log.warning("index files under %s are for another model: rebuilding", self.directory)
                return False
            users: dict[int, faiss.Index] = {
                int(u): faiss.read_index(str(self.directory / f"u{u}.faiss")) for u in manifest["users"]
            }
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if manifest_path.exists():
                log.warning("index files under %s unreadable (%s): rebuilding", self.directory, exc)
            return False
        with self._lock:
            self._users = users
            self.seq = int(manifest["seq"])
            self._dirty.clear()
        log.info("index loaded: %d users, %d vectors, seq %d", len(users), self.count(), self.seq)
        return True


def _atomic_write_index(index: faiss.Index, path: Path) -> None:
    tmp = path.with_suffix(".faiss.tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, path)
