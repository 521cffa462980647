"""The durable job queue (procrastinate on the same Postgres): tasks, enqueueing, the worker."""

import asyncio
import logging
import os
import socket
from dataclasses import dataclass

import procrastinate
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from memsvc import construct, logs, reembed, store
from memsvc.db import libpq_url, make_engine, make_session_factory, transaction
from memsvc.embed import Embedder, get_embedder
from memsvc.extract import Extractor, make_extractor
from memsvc.settings import Settings

log = logging.getLogger(__name__)

QUEUE = "memory"
BUILD_TASK = "build_memory"
REEMBED_TASK = "reembed_tenant"
# A worker that has not updated its heartbeat for this long is presumed dead (killed, crashed,
# lost its machine) and its running jobs are put back in the queue.
HEARTBEAT_S = 2.0
STALLED_AFTER_S = 15.0


def make_app(database_url: str) -> procrastinate.App:
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq_url(database_url)))


@dataclass
class WorkerResources:
    """Built once per worker process, before the first job (the model load costs seconds)."""

    factory: sessionmaker[Session]
    embedder: Embedder
    extractor: Extractor
    max_attempts: int
    settings: Settings


_resources: WorkerResources | None = None


def register_tasks(app: procrastinate.App, max_attempts: int) -> None:
    retry = procrastinate.RetryStrategy(max_attempts=max_attempts, exponential_wait=2)

    @app.task(name=BUILD_TASK, queue=QUEUE, retry=retry, pass_context=True)
    def build_memory(context: procrastinate.JobContext, job_id: str) -> None:
        assert _resources is not None, "worker resources are built before jobs run"
        token = logs.job_id.set(job_id)  # every line logged while this job runs names it
        try:
            construct.build_job(_resources.factory, _resources.embedder, _resources.extractor, job_id)
        except Exception as exc:
            attempts = context.job.attempts + 1
            final = attempts > _resources.max_attempts
            log.exception("job %s failed (attempt %d%s)", job_id, attempts, ", giving up" if final else "")
            # The job stays visible: failed with its error once retries are spent, else queued
            # with the error of the last attempt while it waits for the next.
            with transaction(_resources.factory) as session:
                store.set_job_status(
                    session, job_id, "failed" if final else "queued", f"{type(exc).__name__}: {exc}"
                )
            raise
        finally:
            logs.job_id.reset(token)

    @app.task(name=REEMBED_TASK, queue=QUEUE, retry=retry)
    def reembed_tenant(tenant_id: int, model: str, batch_size: int) -> None:
        """Give every unit of the tenant a vector of `model`; a rerun continues where one stopped."""
        assert _resources is not None, "worker resources are built before jobs run"
        s = _resources.settings
        embedder = get_embedder(model, s.embed_device, s.embed_batch_size, s.embed_threads)
        batches = reembed.run(_resources.factory, embedder, tenant_id, batch_size)
        log.info("re-embed of tenant %d to %s finished: %d batches", tenant_id, model, batches)


def enqueue_reembed(
    app: procrastinate.App, session: Session, tenant_id: int, model: str, batch_size: int
) -> int:
    """Defer a tenant's re-embed in the caller's transaction; returns the queue's job id.

    The per-tenant lock runs one re-embed of a tenant at a time (a second waits for the first).
    """
    connection = session.connection().connection.driver_connection
    return app.configure_task(
        REEMBED_TASK, lock=reembed_lock(tenant_id), queue=QUEUE, connection=connection
    ).defer(tenant_id=tenant_id, model=model, batch_size=batch_size)


def reembed_lock(tenant_id: int) -> str:
    return f"reembed-tenant-{tenant_id}"


def latest_reembed(session: Session, tenant_id: int) -> tuple[int, str] | None:
    """(id, status) of the tenant's newest re-embed job the queue still holds (it deletes finished
    ones), read from procrastinate's table in the caller's session."""
    row = session.execute(
        text("SELECT id, status FROM procrastinate_jobs WHERE lock = :lock ORDER BY id DESC LIMIT 1"),
        {"lock": reembed_lock(tenant_id)},
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def enqueue_build(app: procrastinate.App, session: Session, job_id: str, user_id: int) -> None:
    """Defer the build inside the caller's transaction: the job exists iff the messages do.

    The per-user lock runs one build at a time per user, so construction never races itself.
    """
    connection = session.connection().connection.driver_connection
    app.configure_task(BUILD_TASK, lock=f"user-{user_id}", queue=QUEUE, connection=connection).defer(
        job_id=job_id
    )


async def _requeue_stalled(app: procrastinate.App) -> None:
    while True:
        try:
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER_S)
            for job in stalled:
                log.warning("job %s was running on a dead worker: queued again", job.id)
                await app.job_manager.retry_job(job)
        except Exception:
            log.exception("could not check for stalled jobs; trying again")
        await asyncio.sleep(HEARTBEAT_S * 2)


async def _run(app: procrastinate.App, concurrency: int, burst: bool) -> None:
    async with app.open_async():
        requeue = asyncio.create_task(_requeue_stalled(app))
        try:
            await app.run_worker_async(
                queues=[QUEUE],
                name=f"memsvc-{socket.gethostname()}-{os.getpid()}",
                concurrency=concurrency,
                update_heartbeat_interval=HEARTBEAT_S,
                stalled_worker_timeout=STALLED_AFTER_S,
                delete_jobs="successful",
                install_signal_handlers=not burst,
                wait=not burst,
            )
        finally:
            requeue.cancel()


def run_worker(settings: Settings, database_url: str, *, burst: bool = False) -> None:
    """Run a worker until SIGTERM/SIGINT (finishing the job in hand first), or with `burst`
    until the queue is empty (tests drain the queue this way)."""
    global _resources
    engine = make_engine(database_url, pool_size=settings.worker_concurrency + 1)
    _resources = WorkerResources(
        factory=make_session_factory(engine),
        embedder=get_embedder(
            settings.embed_model, settings.embed_device, settings.embed_batch_size, settings.embed_threads
        ),
        extractor=make_extractor(
            settings.extractor,
            llm_base_url=settings.llm_base_url,
            llm_model=settings.llm_model,
            llm_api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            llm_timeout_s=settings.llm_timeout_s,
            llm_max_concurrency=settings.llm_max_concurrency,
            llm_tokens_per_minute=settings.llm_tokens_per_minute,
        ),
        max_attempts=settings.job_max_attempts,
        settings=settings,
    )
    app = make_app(database_url)
    register_tasks(app, settings.job_max_attempts)
    log.info("worker ready (concurrency %d)", settings.worker_concurrency)
    asyncio.run(_run(app, settings.worker_concurrency, burst))
    engine.dispose()
