"""FAISS vector index: one flat inner-product index per user, a cache of the vectors in Postgres.

FAISS ids are memory_unit ids. Files are written with faiss.write_index (never pickled) under the
data dir, with a manifest naming the model and the change sequence number they reflect.
"""

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


def _new_index(dim: int) -> faiss.IndexIDMap2:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """Per-user FAISS indexes plus the change sequence number they are in step with."""

    def __init__(self, model: str, dim: int, directory: Path | None) -> None:
        self.model = model
        self.dim = dim
        self.seq = 0
        self._users: dict[int, faiss.IndexIDMap2] = {}
        self._dirty: set[int] = set()
        self._dropped: set[int] = set()
        self._lock = threading.RLock()
        # Held by whoever applies the change sequence: two appliers interleaving could replay an
        # old "add" after a newer "drop_user" and bring an erased vector back.
        self.refresh_lock = threading.RLock()
        self.directory = directory / re.sub(r"[^A-Za-z0-9_.-]+", "_", model) if directory else None

    # --- changes ------------------------------------------------------------------------------

    def add(self, user_id: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add (or replace) vectors; replaying a change already applied changes nothing."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self._lock:
            index = self._users.get(user_id)
            if index is None:
                index = self._users[user_id] = _new_index(self.dim)
            index.remove_ids(ids)  # type: ignore[arg-type]  # the SWIG wrapper takes arrays too
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
            self._dirty.add(user_id)

    def remove(self, user_id: int, ids: Iterable[int]) -> None:
        with self._lock:
            index = self._users.get(user_id)
            if index is not None:
                index.remove_ids(np.asarray(list(ids), dtype=np.int64))  # type: ignore[arg-type]  # as above
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
            return {int(index.id_map.at(i)) for i in range(index.ntotal)}

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
            users: dict[int, faiss.IndexIDMap2] = {
                int(u): faiss.read_index(str(self.directory / f"u{u}.faiss"))  # type: ignore[misc]
                for u in manifest["users"]
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
