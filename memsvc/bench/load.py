"""`memsvc bench load`: concurrent clients mixing ingest and search against one memsvc; afterwards
every acknowledged message must be stored exactly once and built into memory, with no 5xx."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import secrets
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from memsvc.bench.client import BenchError, LocalServer, exit_on_sigterm

NAMES = ("Caroline", "Melanie", "Jon", "Gina", "Nate", "Joanna", "Tim", "Audrey")
PLACES = ("Boston", "the lake", "a pottery class", "the support group", "Paris", "the gym", "the library")
THINGS = ("a sunset painting", "a rescue dog", "a new job", "a camping trip", "a guitar", "a marathon")
SAYINGS = (
    "{a} told me yesterday that she went to {p} with {b}.",
    "I started {t} last week, {b} helped me a lot.",
    "We are planning {t} in {p} next month.",
    "{a} finally finished {t}, it took three weeks.",
    "Last Saturday {a} and {b} met at {p}.",
)
QUESTIONS = ("Where did {a} go?", "What did {a} start?", "Who helped with {t}?", "When did they meet at {p}?")

SEARCH_BODY = {"limit": 20, "max_tokens": 500}
REQUEST_TIMEOUT_S = 300.0  # an ingest with wait=true may block up to the server's wait timeout
MAX_TRIES = 5  # transport errors and 429s on one request before the client gives up on it


def log(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


@dataclass
class Config:
    clients: int
    duration_s: float
    ingest_share: float  # of requests; the rest are searches
    wait_share: float  # of new ingests, sent with wait=true
    retry_share: float  # of ingests, a repeat of an acknowledged batch (must all be duplicates)
    batch_max: int
    drain_timeout_s: float
    seed: int


@dataclass
class Ledger:
    """What one client's user was told: acknowledged message ids, batches, build jobs."""

    user: str
    acked: set[str] = field(default_factory=set)
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    given_up: set[str] = field(default_factory=set)  # sent, never acknowledged


@dataclass
class Stats:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    transport_errors: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    dedup_violations: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def record(self, route: str, status: int, ms: float) -> None:
        self.latencies_ms[route].append(ms)
        self.statuses[route][status] += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 0.5), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "max_ms": round(max(values), 1),
    }


class Client:
    """One simulated agent: its own key and user, sending one request at a time."""

    def __init__(
        self, n: int, http: httpx.AsyncClient, key: str, run: str, cfg: Config, stats: Stats
    ) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}
        self.cfg = cfg
        self.stats = stats
        self.rng = random.Random(cfg.seed * 1000 + n)
        self.ledger = Ledger(user=f"{run}-u{n}")
        self.prefix = f"{run}-c{n}"
        self.sent = 0

    async def send(
        self, route: str, method: str, url: str, body: dict[str, Any] | None
    ) -> httpx.Response | None:
        """The answer (any status but 429), or None after MAX_TRIES transport errors or 429s."""
        for _ in range(MAX_TRIES):
            start = time.perf_counter()
            try:
                r = await self.http.request(method, url, json=body, headers=self.headers)
            except httpx.HTTPError as exc:
                self.stats.transport_errors[f"{route}: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
                continue
            self.stats.record(route, r.status_code, (time.perf_counter() - start) * 1000)
            if r.status_code == 429:
                self.stats.rate_limited += 1
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            return r
        return None

    def new_batch(self) -> list[dict[str, Any]]:
        now = time.time()
        batch = []
        for _ in range(self.rng.randint(1, self.cfg.batch_max)):
            self.sent += 1
            a, b = self.rng.sample(NAMES, 2)
            text = self.rng.choice(SAYINGS).format(
                a=a, b=b, p=self.rng.choice(PLACES), t=self.rng.choice(THINGS)
            )
            batch.append(
                {
                    "id": f"{self.prefix}-{self.sent}",
                    "role": self.rng.choice(("user", "assistant")),
                    "speaker": a,
                    "content": text,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now)),
                }
            )
        return batch

    async def ingest(self) -> None:
        repeat = bool(self.ledger.batches) and self.rng.random() < self.cfg.retry_share
        batch = self.rng.choice(self.ledger.batches) if repeat else self.new_batch()
        wait = not repeat and self.rng.random() < self.cfg.wait_share
        route = "ingest_repeat" if repeat else "ingest_wait" if wait else "ingest"
        ids = [m["id"] for m in batch]
        url = f"/v1/users/{self.ledger.user}/sessions/s{self.rng.randint(1, 3)}/messages"
        r = await self.send(route, "POST", url, {"messages": batch, "wait": wait})
        if r is None or r.status_code not in (200, 202):
            if r is not None:
                self.stats.unexpected.append(f"{route}: {r.status_code} {r.text[:200]}")
            if not repeat:
                self.ledger.given_up.update(ids)
            return
        answer = r.json()
        if repeat and (answer["accepted"], answer["duplicates"]) != (0, len(batch)):
            self.stats.dedup_violations.append(f"{self.ledger.user} {ids}: {answer}")
        if not repeat:
            self.ledger.batches.append(batch)
            self.ledger.acked.update(ids)
            self.ledger.given_up.difference_update(ids)
        if answer["accepted"]:
            self.ledger.jobs.append(answer["job_id"])

    async def search(self) -> None:
        a = self.rng.choice(NAMES)
        query = self.rng.choice(QUESTIONS).format(a=a, p=self.rng.choice(PLACES), t=self.rng.choice(THINGS))
        body = {"query": query, "mode": self.rng.choice(("fast", "deep")), **SEARCH_BODY}
        r = await self.send("search", "POST", f"/v1/users/{self.ledger.user}/search", body)
        if r is not None and r.status_code != 200:
            self.stats.unexpected.append(f"search: {r.status_code} {r.text[:200]}")

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if not self.ledger.acked or self.rng.random() < self.cfg.ingest_share:
                await self.ingest()
            else:
                await self.search()


async def probe_health(http: httpx.AsyncClient, stats: Stats, deadline: float) -> None:
    """/healthz twice a second: a slow answer means the API's threads are all taken (e.g. by
    ingests waiting with wait=true), which every other request would feel too."""
    while time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            r = await http.get("/healthz")
            stats.record("healthz", r.status_code, (time.perf_counter() - start) * 1000)
        except httpx.HTTPError as exc:
            stats.transport_errors[f"healthz: {type(exc).__name__}"] += 1
        await asyncio.sleep(0.5)


async def wait_for_jobs(http: httpx.AsyncClient, clients: list[Client], timeout_s: float) -> dict[str, int]:
    """Polls every build job until done or failed (or time runs out); counts by final status."""
    pending = {job: c for c in clients for job in c.ledger.jobs}
    final: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    gate = asyncio.Semaphore(8)

    async def poll(job: str, client: Client) -> None:
        async with gate:
            r = await client.send("job", "GET", f"/v1/jobs/{job}", None)
        status = r.json().get("status") if r is not None and r.status_code == 200 else None
        if status in ("done", "failed"):
            final[status] += 1
            del pending[job]

    while pending and time.monotonic() < deadline:
        await asyncio.gather(*(poll(j, c) for j, c in list(pending.items())))
        if pending:
            await asyncio.sleep(1.0)
    final["pending"] = len(pending)
    return dict(final)


async def verify(clients: list[Client], timeout_s: float) -> dict[str, int]:
    """Every acknowledged id stored exactly once and built into a message unit: the service's
    counts per user against the ledger (ids are unique per user, so equal counts mean none lost
    and none doubled; messages sent but never acknowledged may or may not be stored). A batch
    whose answer was lost in transit has a job the ledger never saw: allow it time to finish."""
    totals: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    for c in clients:
        stored = built = 0
        while True:
            r = await c.send("user", "GET", f"/v1/users/{c.ledger.user}", None)
            if r is not None and r.status_code == 200:
                stored, built = int(r.json()["messages"]), int(r.json()["by_kind"].get("message", 0))
            if built >= stored or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        acked, unsure = len(c.ledger.acked), len(c.ledger.given_up)
        totals["acknowledged"] += acked
        totals["unacknowledged"] += unsure
        totals["stored"] += stored
        totals["built"] += built
        totals["lost"] += max(0, acked - stored)
        totals["extra"] += max(0, stored - acked - unsure)
        totals["unbuilt"] += max(0, stored - built)
    return dict(totals)


async def drive(url: str, keys: list[str], cfg: Config) -> dict[str, Any]:
    stats = Stats()
    run = f"load-{secrets.token_hex(3)}"
    limits = httpx.Limits(max_connections=cfg.clients + 16, max_keepalive_connections=cfg.clients + 16)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=10.0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        clients = [Client(n, http, keys[n % len(keys)], run, cfg, stats) for n in range(cfg.clients)]
        start = time.monotonic()
        deadline = start + cfg.duration_s
        await asyncio.gather(probe_health(http, stats, deadline), *(c.run(deadline) for c in clients))
        load_s = time.monotonic() - start  # includes the requests in flight at the deadline
        load_requests = sum(len(v) for k, v in stats.latencies_ms.items() if k != "healthz")
        log(f"load phase: {load_requests} requests in {load_s:.1f} s; waiting for the build jobs")
        drain_start = time.monotonic()
        jobs = await wait_for_jobs(http, clients, cfg.drain_timeout_s)
        drain_s = time.monotonic() - drain_start
        messages = await verify(clients, max(60.0, cfg.drain_timeout_s - drain_s))
    five_xx = sum(n for counts in stats.statuses.values() for s, n in counts.items() if s >= 500)
    return {
        "config": cfg.__dict__,
        "run": run,
        "load_seconds": round(load_s, 1),
        "requests": load_requests,
        "requests_per_s": round(load_requests / load_s, 1),
        "5xx": five_xx,
        "transport_errors": dict(stats.transport_errors),
        "rate_limited_429": stats.rate_limited,
        "routes": {
            route: {
                **summary(values),
                "statuses": {str(s): n for s, n in sorted(stats.statuses[route].items())},
            }
            for route, values in sorted(stats.latencies_ms.items())
        },
        "jobs": {"total": sum(len(c.ledger.jobs) for c in clients), **jobs},
        "drain_seconds": round(drain_s, 1),
        "messages": messages,
        "dedup_violations": stats.dedup_violations[:20],
        "unexpected": stats.unexpected[:20],
    }


def passed(report: dict[str, Any]) -> bool:
    m, j = report["messages"], report["jobs"]
    return (
        report["5xx"] == 0
        and m["lost"] == 0
        and m["extra"] == 0
        and m["unbuilt"] == 0
        and j.get("failed", 0) == 0
        and j.get("pending", 0) == 0
        and not report["dedup_violations"]
    )


@contextlib.contextmanager
def target(
    args: argparse.Namespace, clients: int, keep_log: Path
) -> Iterator[tuple[str, list[str], LocalServer | None]]:
    """--url with its --key, or a local `memsvc serve` (removed after, its log kept at `keep_log`)
    with one key per client."""
    if args.url:
        yield args.url.rstrip("/"), [args.key], None
        return
    log("starting a local memsvc serve")
    with LocalServer() as server:
        tenant = f"load-{secrets.token_hex(3)}"
        try:
            # One key per client, as separate agents would have: the per-key rate limit applies
            # to each, as it would in use.
            yield server.url, [server.tenant_key(tenant) for _ in range(clients)], server
        except BaseException:
            log(f"memsvc serve log tail:\n{server.log_tail()}")
            raise
        finally:
            with contextlib.suppress(OSError):
                keep_log.write_bytes(server.log_path.read_bytes())


def run(args: argparse.Namespace) -> int:
    if args.url and not args.key:
        log("--url needs --key (a tenant key of that deployment)")
        return 2
    cfg = Config(
        clients=args.clients,
        duration_s=args.duration,
        ingest_share=args.ingest_share,
        wait_share=args.wait_share,
        retry_share=args.retry_share,
        batch_max=args.batch_max,
        drain_timeout_s=args.drain_timeout,
        seed=args.seed,
    )
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # a plain kill still stops the local server
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target(args, cfg.clients, out.with_suffix(".serve.log")) as (url, keys, server):
            log(f"{cfg.clients} clients for {cfg.duration_s:.0f} s against {url}")
            report = asyncio.run(drive(url, keys, cfg))
            report["server"] = "local" if server else url
            report["server_peak_rss_mb"] = (
                round(server.peak_rss_mb, 1) if server and server.peak_rss_mb else None
            )
    except (BenchError, OSError) as e:
        log(f"load test failed: {e}")
        return 1
    report["passed"] = passed(report)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out}")
    print(render(report))
    return 0 if report["passed"] else 1


def render(report: dict[str, Any]) -> str:
    m, j = report["messages"], report["jobs"]
    lines = [
        f"{report['requests']} requests in {report['load_seconds']} s ({report['requests_per_s']}/s), "
        f"5xx: {report['5xx']}, 429: {report['rate_limited_429']}, transport errors: "
        f"{sum(report['transport_errors'].values())}",
        "| route | n | p50 ms | p95 ms | max ms | statuses |",
        "|---|---|---|---|---|---|",
    ]
    for route, s in report["routes"].items():
        cells = [
            route,
            s["n"],
            s.get("p50_ms", "-"),
            s.get("p95_ms", "-"),
            s.get("max_ms", "-"),
            s["statuses"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append(
        f"jobs: {j['total']} ({j.get('done', 0)} done, {j.get('failed', 0)} failed, {j.get('pending', 0)} "
        f"pending after {report['drain_seconds']} s); messages: {m['acknowledged']} acknowledged, "
        f"{m['stored']} stored, {m['built']} built, lost {m['lost']}, extra {m['extra']}; "
        f"{'PASSED' if report['passed'] else 'FAILED'}"
    )
    return "\n".join(lines)
