"""`memsvc bench`: the project's benchmarks, each one subcommand of the `bench` group."""

from __future__ import annotations

import argparse


def _locomo(args: argparse.Namespace) -> int:
    # Imported on use: the bench pulls in the embedder, bm25s and matplotlib, which `serve` never needs.
    from memsvc.bench.runner import run

    return run(args)


def _scale(args: argparse.Namespace) -> int:
    from memsvc.bench.scale import run

    return run(args)


def _load(args: argparse.Namespace) -> int:
    from memsvc.bench.load import run

    return run(args)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]  # argparse's own generic
    """Adds the bench subcommands to the `bench` group; each sets `func(args) -> exit code`."""
    p = subparsers.add_parser(
        "locomo",
        help="evidence recall on LoCoMo-format data, memsvc against turn-level baselines",
        description="Ingests LoCoMo conversations through the HTTP API, searches every question of "
        "categories 1-4 and scores evidence recall inside token budgets, beside turn-level BM25, "
        "dense and hybrid baselines. Without --url it starts (and removes) its own memsvc.",
    )
    p.add_argument("--data", required=True, help="LoCoMo-format JSON file")
    p.add_argument("--url", help="benchmark a running deployment at this base URL instead of a local one")
    p.add_argument("--key", help="tenant key for --url")
    p.add_argument("--json", required=True, help="output JSON; .md and .png are written beside it")
    p.add_argument("--convs", help="comma-separated sample ids to run (default: all)")
    p.add_argument("--baselines-only", action="store_true", help="score only the turn-level baselines")
    p.set_defaults(func=_locomo)

    p = subparsers.add_parser(
        "scale",
        help="insert, index build and search latency at growing sizes (synthetic units)",
        description="Fills fresh databases with synthetic memory units (real template sentences, "
        "vectors derived from a pool of real embeddings), times insert and index build, then "
        "searches a local memsvc over HTTP beside the raw embed and FAISS costs.",
    )
    p.add_argument("--units", default="10000,100000,1000000", help="comma-separated total sizes")
    p.add_argument("--json", required=True, help="output JSON; .md and .png are written beside it")
    p.add_argument("--users", type=int, default=1000, help="users the many-users configuration spreads over")
    p.add_argument("--configs", default="single,many", help="single (one user) and/or many (--users users)")
    p.add_argument("--queries", type=int, default=200, help="search requests per mode and size")
    p.add_argument("--pool", type=int, default=3000, help="real sentences encoded to derive vectors from")
    p.add_argument("--database-url", help="PostgreSQL server to create fresh databases on "
                   "(default: an embedded one under /tmp, removed after)")
    p.add_argument("--insert-sample", type=int, default=10_000,
                   help="units per run stored through store.insert_units (timed); the rest by COPY")
    p.add_argument("--max-minutes", type=float, default=25.0, help="start no new run after this long")
    p.set_defaults(func=_scale)

    p = subparsers.add_parser(
        "load",
        help="concurrent clients mixing ingest and search: zero 5xx, zero lost messages, latency per route",
        description="Runs --clients concurrent clients for --duration seconds, each with its own user, "
        "mixing ingest (small batches, unique ids, some repeats to exercise dedup, some wait=true) and "
        "search; then waits for every build job and checks each acknowledged message is stored once "
        "and built. Without --url it starts (and removes) its own memsvc serve. Exit 1 if any check fails.",
    )
    p.add_argument("--url", help="a running deployment's base URL (default: start a local one)")
    p.add_argument("--key", help="tenant key for --url (all clients share it, and its rate limit)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--json", required=True, help="the report; a local server's log goes beside it")
    p.add_argument("--ingest-share", type=float, default=0.3, help="share of requests that ingest")
    p.add_argument("--wait-share", type=float, default=0.1, help="share of new ingests sent with wait=true")
    p.add_argument("--retry-share", type=float, default=0.15, help="share of ingests repeating a sent batch")
    p.add_argument("--batch-max", type=int, default=3, help="most messages in one ingest")
    p.add_argument("--drain-timeout", type=float, default=900.0, help="longest wait for the build jobs after")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_load)
