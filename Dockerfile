# memsvc image: the API (`memsvc serve`) by default; the same image runs `memsvc worker`.
# Build with --build-arg EXTRAS=gpu for the CUDA worker image (CUDA torch, faiss-gpu-cu12).
FROM python:3.11-slim

ARG EXTRAS=""
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_GPU_INDEX=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Same order as the Makefile: torch==2.13.0 first, so the project's `torch>=2.4` is already met and
# pip never swaps in another build. Its own layer, so code changes do not re-download it.
RUN if [ "$EXTRAS" = "gpu" ]; then index="$TORCH_GPU_INDEX"; else index="$TORCH_CPU_INDEX"; fi \
 && pip install "torch==${TORCH_VERSION}" --index-url "$index"

# Editable install from /app: memsvc/db.py finds the Alembic scripts at <memsvc>/../migrations, which
# is /app/migrations here; a plain `pip install .` would put memsvc in site-packages without them.
# faiss-cpu and faiss-gpu-cu12 both provide the `faiss` module: the GPU image removes one, then adds
# the other (installing `.[gpu]` would bring faiss-cpu back, since it is a base dependency).
COPY pyproject.toml README.md ./
COPY memsvc ./memsvc
COPY migrations ./migrations
RUN pip install -e . \
 && if [ "$EXTRAS" = "gpu" ]; then \
        pip uninstall -y faiss-cpu && pip install "faiss-gpu-cu12>=1.8"; \
    fi \
 && python -c "from memsvc.db import MIGRATIONS_DIR; assert (MIGRATIONS_DIR / 'env.py').is_file(), MIGRATIONS_DIR"

RUN useradd --create-home --uid 10001 memsvc \
 && mkdir -p /data \
 && chown memsvc:memsvc /data
USER 10001:10001
VOLUME ["/data"]

EXPOSE 8420
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8420/healthz', timeout=4)"]
CMD ["memsvc", "serve", "--host", "0.0.0.0", "--port", "8420", "--data-dir", "/data"]
