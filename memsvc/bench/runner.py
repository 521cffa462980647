"""`memsvc bench locomo`: ingest LoCoMo through the HTTP API, search, score; turn baselines beside it."""

from __future__ import annotations

import argparse
import contextlib
import resource
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memsvc.bench import report
from memsvc.bench.baselines import as_hits, rank_conversation
from memsvc.bench.client import BenchError, LocalServer, MemsvcClient, exit_on_sigterm, http_client
from memsvc.bench.locomo import Conversation, DataError, load
from memsvc.bench.score import Scored, hits_from_json, recall, summarize
from memsvc.embed import Embedder, get_embedder
from memsvc.extract import RulesExtractor
from memsvc.extract import Turn as ExTurn
from memsvc.settings import get_settings

BASELINE_BUDGETS = (500, 1000, 2000)
# (system name, search mode, max_tokens): the service packs into the same budget it is scored at.
MEMSVC_RUNS = (("memsvc-deep@B1000", "deep", 1000), ("memsvc-deep@B2000", "deep", 2000),
               ("memsvc-fast@B1000", "fast", 1000))
SEARCH_LIMIT = 100


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Results:
    """Everything one run measures; `report` turns it into the JSON, Markdown and PNG."""

    scores: dict[str, list[Scored]] = field(default_factory=dict)
    per_question: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[str, int] = field(default_factory=dict)  # conversation -> its first per_question index
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"fast": [], "deep": []})
    ingest_messages_per_s: float | None = None
    encode_sentences_per_s: float | None = None
    units_per_message: float | None = None
    encoded_per_message: float | None = None  # texts the service embeds per message (units + entities)
    encode_units_per_s: float | None = None  # raw encode of the unit texts ingest makes, same model
    server_peak_rss_mb: float | None = None
    embed_device: str = ""

    def add(self, system: str, category: int, value: float) -> None:
        self.scores.setdefault(system, []).append(Scored(category, value))

    def recall_table(self) -> dict[str, dict[str, float | int | None]]:
        return {system: summarize(scored) for system, scored in self.scores.items()}


def measure_encode(embedder: Embedder, texts: list[str]) -> float:
    """Sentences/s of one encode over all message texts, model already loaded and warmed."""
    embedder.encode(texts[:16])
    start = time.perf_counter()
    embedder.encode(texts)
    return len(texts) / (time.perf_counter() - start)


def unit_texts(convs: list[Conversation]) -> list[str]:
    """What ingest encodes, rebuilt here with the same code: each message as its unit text, the EDUs
    the default (rules) extractor makes of it, and each entity name once per conversation."""
    extractor = RulesExtractor()
    texts: list[str] = []
    for conv in convs:
        names: dict[str, None] = {}
        for _, turns in conv.sessions:
            people = list(dict.fromkeys(t.speaker for t in turns))
            batch = [ExTurn(t.dia_id, t.speaker, "user", t.text, t.created_at) for t in turns]
            edus = extractor.extract(batch, people)
            texts += [t.unit_text for t in turns] + [e.text for e in edus]
            names.update(dict.fromkeys(n for e in edus for n in e.entities))
        texts += list(names)
    return texts


def run_baselines(convs: list[Conversation], embedder: Embedder, res: Results) -> None:
    for conv in convs:
        rankings = rank_conversation(conv, embedder)
        for name, per_q in (("bm25", rankings.bm25), ("dense", rankings.dense), ("hybrid", rankings.hybrid)):
            for qi, (q, ranking) in enumerate(zip(conv.questions, per_q, strict=True)):
                hits = as_hits(conv, ranking)
                for budget in BASELINE_BUDGETS:
                    system = f"turn-{name}@B{budget}"
                    value = recall(hits, q.evidence, budget)
                    res.add(system, q.category, value)
                    res.per_question[res.offsets[conv.sample_id] + qi]["recall"][system] = value


def register_questions(convs: list[Conversation], res: Results) -> None:
    for conv in convs:
        res.offsets[conv.sample_id] = len(res.per_question)
        for q in conv.questions:
            res.per_question.append({"conv": conv.sample_id, "question": q.question,
                                     "category": q.category_name, "evidence": list(q.evidence),
                                     "recall": {}})


def run_memsvc(convs: list[Conversation], client: MemsvcClient, res: Results) -> None:
    users = {conv.sample_id: f"bench-{conv.sample_id}-{secrets.token_hex(4)}" for conv in convs}
    try:
        n_messages = sum(len(c.turns) for c in convs)
        log(f"ingesting {n_messages} messages of {len(convs)} conversation(s)")
        start = time.perf_counter()
        for conv in convs:
            for number, turns in conv.sessions:
                client.ingest(users[conv.sample_id], f"session-{number}", list(turns))
        res.ingest_messages_per_s = n_messages / (time.perf_counter() - start)
        log(f"ingest: {res.ingest_messages_per_s:.1f} messages/s")

        stats = [client.stats(users[c.sample_id]) for c in convs]
        if all(s is not None for s in stats):
            units = sum(int(s["units"]) for s in stats if s is not None)
            entities = sum(int(s.get("entities", 0)) for s in stats if s is not None)
            res.units_per_message = units / n_messages
            res.encoded_per_message = (units + entities) / n_messages

        for conv in convs:
            user = users[conv.sample_id]
            log(f"searching {len(conv.questions)} questions of {conv.sample_id}")
            for qi, q in enumerate(conv.questions):
                for system, mode, budget in MEMSVC_RUNS:
                    t0 = time.perf_counter()
                    raw = client.search(user, q.question, mode, budget, SEARCH_LIMIT)
                    res.latencies_ms[mode].append((time.perf_counter() - t0) * 1000)
                    value = recall(hits_from_json(raw), q.evidence, budget)
                    res.add(system, q.category, value)
                    res.per_question[res.offsets[conv.sample_id] + qi]["recall"][system] = value
    finally:
        for user in users.values():
            try:
                client.delete_user(user)
            except (BenchError, OSError) as e:
                log(f"could not delete bench user {user}: {e}")


@contextlib.contextmanager
def target(args: argparse.Namespace, res: Results) -> Iterator[MemsvcClient]:
    """A client for --url/--key, or for a local `memsvc serve` started (and removed) around the run."""
    if args.url:
        with http_client(args.url, args.key) as http:
            yield MemsvcClient(http)
        return
    log("starting a local memsvc serve")
    with LocalServer() as server:
        try:
            key = server.tenant_key(f"bench-{secrets.token_hex(4)}")
            log(f"memsvc serve healthy at {server.url}")
            with http_client(server.url, key) as http:
                yield MemsvcClient(http)
        except BaseException:
            log(f"memsvc serve log tail:\n{server.log_tail()}")
            raise
        finally:
            res.server_peak_rss_mb = server.peak_rss_mb


def run(args: argparse.Namespace) -> int:
    if args.url and not args.key:
        log("--url needs --key (a tenant key of that deployment)")
        return 2
    try:
        convs = load(Path(args.data), [c for c in args.convs.split(",") if c] if args.convs else None)
    except DataError as e:
        log(str(e))
        return 2
    res = Results()
    register_questions(convs, res)
    log(f"{len(convs)} conversation(s), {len(res.per_question)} scorable questions "
        f"({sum(c.skipped for c in convs)} skipped for lack of valid evidence)")

    settings = get_settings()
    embedder = get_embedder(
        settings.embed_model, settings.embed_device, settings.embed_batch_size, settings.embed_threads
    )
    res.embed_device = embedder.device
    res.encode_sentences_per_s = measure_encode(embedder, [t.text for c in convs for t in c.turns])
    log(f"encode: {res.encode_sentences_per_s:.0f} sentences/s on {embedder.device}")
    res.encode_units_per_s = measure_encode(embedder, unit_texts(convs))
    log(f"encode: {res.encode_units_per_s:.0f} unit texts/s (messages, EDUs, entity names)")
    run_baselines(convs, embedder, res)
    log("baselines done")

    if not args.baselines_only:
        # A plain kill of the bench must still stop its local server and delete the bench users.
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        try:
            with target(args, res) as client:
                run_memsvc(convs, client, res)
        except (BenchError, OSError) as e:
            log(f"benchmark of memsvc failed: {e}")
            return 1

    bench_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    out = Path(args.json)
    doc = report.document(
        res, data=str(args.data), convs=[c.sample_id for c in convs], bench_rss_mb=bench_rss_mb,
        server=None if args.baselines_only else (args.url or "local"),
    )
    report.write_all(doc, out)
    log(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    print(report.markdown(doc))
    return 0
