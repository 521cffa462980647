"""The bench's side of the HTTP contract, and a throwaway local `memsvc serve` to point it at."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from memsvc.bench.locomo import Turn

JOB_POLL_S = 0.5


class BenchError(RuntimeError):
    """The service under test did not behave as the contract says."""


def _json(resp: httpx.Response, what: str, ok: tuple[int, ...]) -> Any:
    if resp.status_code not in ok:
        raise BenchError(f"{what}: HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json() if resp.content else None


class MemsvcClient:
    """Tenant-key calls the bench makes: ingest (waiting until searchable), search, erase."""

    def __init__(self, http: httpx.Client, job_timeout_s: float = 1800.0) -> None:
        self.http = http
        self.job_timeout_s = job_timeout_s

    def ingest(self, user: str, session: str, turns: list[Turn]) -> None:
        """Posts one session's turns and returns once the memory built from them is searchable."""
        body = {
            "messages": [
                {
                    "id": t.dia_id,
                    "speaker": t.speaker,
                    "role": "user",
                    "content": t.text,
                    "created_at": t.created_at.isoformat(),
                }
                for t in turns
            ],
            "wait": True,
        }
        resp = self.http.post(f"/v1/users/{user}/sessions/{session}/messages", json=body)
        answer = _json(resp, f"ingest {user}/{session}", (200, 201, 202))
        if resp.status_code == 202:
            # The service may answer 202 when its own wait ran out: the job id is the way on.
            self.wait_job(str(answer["job_id"]))

    def wait_job(self, job_id: str) -> None:
        deadline = time.monotonic() + self.job_timeout_s
        while True:
            job = _json(self.http.get(f"/v1/jobs/{job_id}"), f"job {job_id}", (200,))
            status = job.get("status")
            if status == "done":
                return
            if status == "failed":
                raise BenchError(f"job {job_id} failed: {job.get('error')}")
            if time.monotonic() > deadline:
                raise BenchError(f"job {job_id} still {status} after {self.job_timeout_s:.0f} s")
            time.sleep(JOB_POLL_S)

    def search(self, user: str, query: str, mode: str, max_tokens: int, limit: int) -> list[dict[str, Any]]:
        body = {"query": query, "limit": limit, "max_tokens": max_tokens, "mode": mode}
        answer = _json(self.http.post(f"/v1/users/{user}/search", json=body), f"search {user}", (200,))
        hits = answer.get("hits")
        if not isinstance(hits, list):
            raise BenchError(f"search {user}: answer without a hits list")
        return hits

    def stats(self, user: str) -> dict[str, Any] | None:
        """What the service says it holds for `user` (GET /v1/users/{u}: "units", "entities"...),
        or None when it does not answer that: then nothing is guessed."""
        with contextlib.suppress(httpx.HTTPError, ValueError):
            resp = self.http.get(f"/v1/users/{user}")
            if resp.status_code == 200 and isinstance(resp.json().get("units"), int):
                answer: dict[str, Any] = resp.json()
                return answer
        return None

    def delete_user(self, user: str) -> None:
        _json(self.http.delete(f"/v1/users/{user}"), f"delete {user}", (200, 202, 204, 404))


def http_client(url: str, key: str, timeout_s: float = 600.0) -> httpx.Client:
    # Generous timeouts: an ingest with wait=true blocks until the service has built the memory.
    return httpx.Client(
        base_url=url.rstrip("/"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(timeout_s, connect=10.0),
    )


def exit_on_sigterm(signum: int, frame: object) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C does, so a local server started by a bench stops."""
    raise SystemExit(128 + signum)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memsvc_executable() -> str:
    """The `memsvc` script of this interpreter's environment, so an unactivated venv still works."""
    beside = Path(sys.executable).parent / "memsvc"
    if beside.exists():
        return str(beside)
    found = shutil.which("memsvc")
    if found is None:
        raise BenchError("no `memsvc` executable found (pip install -e .)")
    return found


class RssSampler:
    """Peak resident memory of a set of processes, summed, sampled in the background."""

    def __init__(self, root_pid: int | None, marker: str, interval_s: float = 0.5) -> None:
        self.root_pid = root_pid
        self.marker = marker  # the embedded PostgreSQL may be detached from the tree; find it by its dir
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def processes(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {}
        if self.root_pid is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(self.root_pid)
                procs[root.pid] = root
                for p in root.children(recursive=True):
                    procs[p.pid] = p
        for p in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if p.pid not in procs and any(self.marker in arg for arg in p.info["cmdline"] or []):
                    procs[p.pid] = p
        return list(procs.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in self.processes():
                with contextlib.suppress(psutil.Error):
                    total += int(p.memory_info().rss)
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self.interval_s)


class LocalServer:
    """`memsvc serve` on a free port with a temporary data dir; stopped and removed on exit, also on error."""

    def __init__(self, startup_timeout_s: float = 600.0, env: dict[str, str] | None = None) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.env = env or {}  # set last: e.g. the scale bench points it at a database it filled itself
        self.admin_key = secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="memsvc-bench-"))
        self.log_path = self.dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sampler: RssSampler | None = None

    def __enter__(self) -> LocalServer:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _start(self) -> None:
        data_dir = self.dir / "data"
        env = {**os.environ, "MEMSVC_ADMIN_KEY": self.admin_key}
        env.pop("MEMSVC_DATABASE_URL", None)  # the bench owns its database; never touch a configured one
        env.update(self.env)
        cmd = [memsvc_executable(), "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(data_dir)]
        with self.log_path.open("wb") as log:
            # A new session, so the whole tree (API, workers) can be signalled as one group.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.sampler = RssSampler(self.proc.pid, str(self.dir))
        self.sampler.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"memsvc serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"memsvc serve not healthy after {self.startup_timeout_s:.0f} s:\n"
                                 f"{self.log_tail()}")
            time.sleep(0.5)

    def tenant_key(self, tenant: str) -> str:
        resp = httpx.post(
            f"{self.url}/v1/admin/keys",
            json={"tenant": tenant, "name": "bench"},
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=30.0,
        )
        return str(_json(resp, "create tenant key", (200, 201))["key"])

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def peak_rss_mb(self) -> float | None:
        return self.sampler.peak_bytes / 2**20 if self.sampler and self.sampler.peak_bytes else None

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # lets it stop its PostgreSQL cleanly
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._kill_leftovers()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftovers(self) -> None:
        """Processes this server started outside its group (a daemonized PostgreSQL) still hold the dir."""
        leftovers = RssSampler(None, str(self.dir)).processes()
        for p in leftovers:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=15)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
