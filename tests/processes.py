"""Real `memsvc` processes for end-to-end tests: start, wait for health, find children, clean up."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from factories import ADMIN_KEY, clean_env, stop_process
from sqlalchemy import text

from memsvc import store
from memsvc.db import EmbeddedPostgres, make_engine, make_session_factory
from memsvc.index import VectorIndex

# The console script `pip install -e .` puts next to the interpreter: the entry point users run.
MEMSVC = str(Path(sys.executable).parent / "memsvc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """One `memsvc serve` process tree in its own process group, logging to a file."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log = data_dir / f"serve-{self.port}.log"
        self.env = clean_env(MEMSVC_ADMIN_KEY=ADMIN_KEY, **env)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> "Serve":
        cmd = [MEMSVC, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited with {self.proc.returncode}:\n{self.tail()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"serve not healthy after {timeout}s:\n{self.tail()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=180)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the serve process only (as a supervisor would); its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def workers(self) -> list[int]:
        """Pids of the serve process's `memsvc worker` children."""
        assert self.proc is not None
        return [pid for pid in children(self.proc.pid) if b"worker" in cmdline(pid)]

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the parent pid is the 2nd field after the parenthesised command name
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def postgres_running_under(directory: Path) -> list[int]:
    """Pids of PostgreSQL servers whose data directory lies under `directory`."""
    needle = str(directory.resolve()).encode()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and b"postgres" in cmdline(int(p.name)) and needle in cmdline(int(p.name))
    ]


def stop_postgres_under(directory: Path) -> None:
    """Last-resort cleanup: a PostgreSQL left running under `directory` is stopped (fast shutdown)."""
    for pid_file in directory.rglob("postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (OSError, ValueError, IndexError):
            continue
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


def socket_url(pg_dir: Path) -> str:
    """The URL of an embedded PostgreSQL whose data (and socket) directory is pg_dir."""
    return f"postgresql://postgres@/postgres?host={pg_dir}"


def index_matches_postgres(data_dir: Path) -> dict[int, int]:
    """The index files a stopped `serve` left under data_dir hold exactly the vectors its embedded
    PostgreSQL holds (none lost, none twice); returns the vector count per user."""
    server = EmbeddedPostgres(data_dir)
    engine = make_engine(server.url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            model, blob = session.execute(
                text("SELECT embed_model, vector FROM memory_unit WHERE vector IS NOT NULL LIMIT 1")
            ).first() or ("", b"")
            index = VectorIndex(model, len(store.from_blob(blob)), data_dir / "index")
            assert index.load(), "the index files could not be loaded"
            counts = store.vector_counts(session, model)
            assert index.counts() == counts
            return counts
    finally:
        engine.dispose()
        server.stop()
