"""Prometheus metrics at /metrics: request latency by route, queue depth, jobs, index sizes.

Request latency is observed in the API process as requests pass (a histogram per route template,
method and status). Everything else is read when Prometheus scrapes, by a few aggregate queries and
from this process's FAISS index. Job durations and failures come from the `job` table rather than
from counters inside the workers: workers are separate processes (under `serve`) or separate
machines (`memsvc worker`, compose replicas), and the table already records when each job was
created and last changed, how often it ran and how it ended, for every worker wherever it runs.
Prometheus' multiprocess mode would only see the workers that share this machine's disk.
"""

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.routing import BaseRoute

from memsvc.api import StateDep, bearer, get_caller
from memsvc.errors import Forbidden
from memsvc.state import AppState

log = logging.getLogger(__name__)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# Ingest to searchable: seconds on a GPU, minutes behind a backlog on a small CPU box.
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
JOB_STATUSES = ("queued", "running", "done", "failed")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def route_label(request: Request) -> str:
    """The matched route's template (`/v1/users/{user_id}/search`), never the raw path: raw paths
    carry user ids, which would both leak them and make one time series per user. "unmatched":
    unknown paths, and bodies refused (411, 413) before routing."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else "unmatched"


# --- what is read at scrape time: plain queries over a session ---------------------------------


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(text("SELECT status, count(*) FROM job GROUP BY status"))
    return {str(status): int(n) for status, n in rows}


def queue_counts(session: Session) -> dict[tuple[str, str], int]:
    """procrastinate's own jobs by (task, status); it deletes the ones that succeeded."""
    rows = session.execute(
        text("SELECT task_name, status::text, count(*) FROM procrastinate_jobs GROUP BY 1, 2")
    )
    return {(str(task), str(status)): int(n) for task, status, n in rows}


def job_durations(session: Session) -> dict[str, tuple[list[int], float, int]]:
    """For done and failed jobs: cumulative counts per JOB_BUCKETS bound, sum and count of
    (updated_at - created_at), i.e. ingest to searchable (or to giving up), queue wait included."""
    buckets = ", ".join(f"count(*) FILTER (WHERE d <= {b})" for b in JOB_BUCKETS)
    rows = session.execute(
        text(
            f"SELECT status, {buckets}, coalesce(sum(d), 0), count(*) FROM ("
            "  SELECT status, extract(epoch FROM updated_at - created_at)::float8 AS d FROM job"
            "  WHERE status IN ('done', 'failed')) t GROUP BY status"
        )
    )
    out: dict[str, tuple[list[int], float, int]] = {}
    for row in rows:
        values = list(row)
        out[str(values[0])] = ([int(v) for v in values[1:-2]], float(values[-2]), int(values[-1]))
    return out


def failed_attempts(session: Session) -> int:
    """Runs of a job that ended in an error: a done or running job's earlier tries, every try of a
    failed job, and every try so far of a queued one (it is back in the queue after an error)."""
    return int(
        session.execute(
            text(
                "SELECT coalesce(sum(CASE WHEN status IN ('done', 'running') THEN greatest(attempts - 1, 0)"
                " ELSE attempts END), 0) FROM job"
            )
        ).scalar_one()
    )


class StoreCollector:
    """Reads queue depth, job outcomes and index sizes when scraped."""

    def __init__(self, state_of: Callable[[], AppState | None]) -> None:
        self._state_of = state_of

    def collect(self) -> Iterator[Metric]:
        state = self._state_of()
        if state is None:  # scraped before the lifespan opened the state
            return
        yield from self._index(state)
        up = GaugeMetricFamily("memsvc_database_up", "1 if the scrape could read PostgreSQL")
        try:
            with state.factory() as session:
                jobs, queue = job_counts(session), queue_counts(session)
                durations, failures = job_durations(session), failed_attempts(session)
        except Exception as exc:  # a scrape while the database restarts: say so, do not fail it
            log.warning("metrics: database unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        g = GaugeMetricFamily("memsvc_jobs", "ingest jobs by status (the job table)", labels=["status"])
        for status in sorted(set(JOB_STATUSES) | set(jobs)):
            g.add_metric([status], jobs.get(status, 0))
        yield g

        q = GaugeMetricFamily(
            "memsvc_queue_jobs",
            "queue entries by task and status (procrastinate; succeeded ones are deleted)",
            labels=["task", "status"],
        )
        for (task, status), n in sorted(queue.items()):
            q.add_metric([task, status], n)
        yield q

        # Cumulative over the job rows that exist: erasing a user removes its jobs, which Prometheus
        # reads as a counter reset, as it would a restart.
        h = HistogramMetricFamily(
            "memsvc_job_duration_seconds",
            "ingest jobs from creation to done (or failed), by outcome",
            labels=["status"],
        )
        for status in ("done", "failed"):
            counts, total, n = durations.get(status, ([0] * len(JOB_BUCKETS), 0.0, 0))
            bounds = [(str(b), float(c)) for b, c in zip(JOB_BUCKETS, counts, strict=True)]
            h.add_metric([status], [*bounds, ("+Inf", float(n))], total)
        yield h

        yield GaugeMetricFamily(
            "memsvc_job_failed_attempts",
            "job runs that ended in an error (retried or given up)",
            value=failures,
        )

    def _index(self, state: AppState) -> Iterator[Metric]:
        counts = state.index.counts()
        model = state.index.model
        vectors = GaugeMetricFamily(
            "memsvc_index_vectors", "vectors in this API process's FAISS index", labels=["model"]
        )
        vectors.add_metric([model], sum(counts.values()))
        users = GaugeMetricFamily(
            "memsvc_index_users", "users with vectors in this API process's FAISS index", labels=["model"]
        )
        users.add_metric([model], len(counts))
        yield vectors
        yield users


class Metrics:
    """One registry per app, so two apps in one process (tests) never share series."""

    def __init__(self, state_of: Callable[[], AppState | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "memsvc_http_request_duration_seconds",
            "HTTP request latency by route template, method and status",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(StoreCollector(state_of))

    def observe(self, request: Request, status: int, seconds: float) -> None:
        method = request.method if request.method in METHODS else "OTHER"
        self.requests.labels(method, route_label(request), str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(
    request: Request,
    state: StateDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """Prometheus text format. Needs the admin key unless MEMSVC_METRICS_PUBLIC is set (for a
    scraper on a private network): tenant names are not in it, but job and index totals are."""
    if not state.settings.metrics_public and not get_caller(state, creds).is_admin:
        raise Forbidden("the admin key is required for /metrics")
    found: Metrics = request.app.state.metrics
    return Response(found.render(), media_type=CONTENT_TYPE_LATEST)
