"""The command line: `memsvc serve | worker | migrate | keys | bench`."""

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memsvc import logs
from memsvc.db import EmbeddedPostgres, migrate
from memsvc.settings import Settings

log = logging.getLogger("memsvc")


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic validates the types


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured server, or else an embedded PostgreSQL under the data dir (stopped on exit)."""
    if settings.database_url:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir)
    try:
        yield server.url
    finally:
        server.stop()


class WorkerPool:
    """Worker subprocesses of `serve`: restarted if one dies, stopped gracefully at shutdown."""

    def __init__(self, count: int, env: dict[str, str]) -> None:
        self.count = count
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "memsvc", "worker"], env=self.env)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping.is_set():
                    log.warning("worker %d exited with %s: starting a new one", proc.pid, proc.returncode)
                    self.procs[i] = self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in %.0fs: killing it", proc.pid, timeout)
                proc.kill()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from memsvc.main import create_app

    settings = load_settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with database(settings) as url:
        log.info("database %s", logs.mask_url(url))
        migrate(url)
        env = dict(os.environ, MEMSVC_DATABASE_URL=url, MEMSVC_DATA_DIR=str(settings.data_dir))
        pool = WorkerPool(settings.workers, env)
        pool.start()
        try:
            config = uvicorn.Config(
                create_app(settings, url),
                host=args.host,
                port=args.port,
                log_level="warning",
                log_config=None,  # uvicorn's lines go through memsvc's handler (text or JSON)
                timeout_graceful_shutdown=10,
            )
            # uvicorn re-raises the signal that stopped it once it has shut down; with the default
            # handler that kills the process before the workers and the database are stopped.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: None)
            uvicorn.Server(config).run()  # returns on SIGTERM / SIGINT
        finally:
            log.info("shutting down: stopping workers")
            pool.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from memsvc.jobs import run_worker

    settings = load_settings(args)
    with database(settings) as url:
        run_worker(settings, url, burst=args.burst)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    with database(settings) as url:
        migrate(url)
    print("database schema is up to date")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from memsvc import store
    from memsvc.db import make_engine, make_session_factory, transaction

    settings = load_settings(args)
    with database(settings) as url:
        migrate(url)
        engine = make_engine(url)
        with transaction(make_session_factory(engine)) as session:
            _, secret = store.create_key(session, args.tenant, args.name)
        engine.dispose()
    print(secret)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memsvc", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    def with_data_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--data-dir",
            help="where the embedded database and index files live "
            "(default: $MEMSVC_DATA_DIR or ./memsvc-data)",
        )
        return p

    serve = with_data_dir(sub.add_parser("serve", help="run the HTTP API and the workers"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8420)
    serve.set_defaults(func=cmd_serve)

    worker = with_data_dir(sub.add_parser("worker", help="run job workers only"))
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.set_defaults(func=cmd_worker)
    with_data_dir(sub.add_parser("migrate", help="bring the schema up to date")).set_defaults(
        func=cmd_migrate
    )

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_cmd", required=True)
    create = with_data_dir(keys.add_parser("create", help="create a tenant key and print it"))
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="cli")
    create.set_defaults(func=cmd_keys_create)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_cmd", required=True)
    try:
        from memsvc import bench as bench_module

        bench_module.register(bench_sub)
    except ImportError:  # the bench package is optional while it is being built
        pass
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
