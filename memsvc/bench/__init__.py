"""`memsvc bench`: the project's benchmarks, each one subcommand of the `bench` group."""

from __future__ import annotations

import argparse


def _locomo(args: argparse.Namespace) -> int:
    # Imported on use: the bench pulls in the embedder, bm25s and matplotlib, which `serve` never needs.
    from memsvc.bench.runner import run

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
