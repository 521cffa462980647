"""`memsvc bench scale`: insert, index build and search latency at 10k-1M synthetic memory units.

Vectors are not all real: encoding 1M texts at ~250/s would take over an hour on 2 cores, so a
pool of `--pool` real template sentences is encoded with the real embedder and every unit's vector
is a pool vector plus small Gaussian noise, renormalized. Queries are real embeddings. Clustered
like this, the data is kinder to an approximate index than real memory; the report says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

from memsvc import recall, store
from memsvc.bench.client import LocalServer, MemsvcClient, http_client
from memsvc.bench.report import machine, percentile
from memsvc.bench.scale_report import markdown, plot
from memsvc.db import libpq_url, make_engine, make_session_factory, migrate, postgres_server, transaction
from memsvc.embed import Embedder, content_hash, get_embedder
from memsvc.index import VectorIndex
from memsvc.settings import get_settings

NOISE_SIGMA = 0.02  # per dimension: noise norm ~0.39, so a unit sits at cosine ~0.93 from its pool vector
BATCH = 10_000
SEARCH_LIMIT, SEARCH_TOKENS = 10, 1000
K = max(SEARCH_LIMIT * 4, 50)  # what recall.search asks FAISS for
WARMUP = 5
RECALL_QUERIES = 100
TENANT = "scale-bench"

NAMES = ("Ana Ruiz", "Ben Okafor", "Chloe Martin", "Dev Patel", "Elif Kaya", "Femi Adeyemi", "Greta Lind",
         "Hiro Tanaka", "Ines Costa", "Jonas Weber", "Kira Novak", "Liam Byrne", "Maya Cohen", "Nils Berg",
         "Omar Haddad", "Priya Nair", "Quinn Dubois", "Rosa Alves", "Sami Laine", "Tara Singh", "Uma Rao",
         "Viktor Horvat", "Wen Li", "Yara Saleh", "Zane Fischer", "Aiko Mori", "Bruno Lopes", "Carla Rossi")
PLACES = ("Lisbon", "Kyoto", "Nairobi", "Oslo", "Montreal", "the Alps", "Crete", "Cape Town", "Seoul",
          "Patagonia", "Edinburgh", "Marrakesh", "Reykjavik", "Hanoi", "Lake Como", "Vancouver",
          "the Rockies", "Sicily", "Tasmania", "Bruges", "Istanbul", "Valparaiso", "Bali", "Prague")
TOPICS = ("pottery", "marathon training", "sourdough baking", "jazz piano", "rock climbing", "birdwatching",
          "chess", "salsa dancing", "woodworking", "astronomy", "oil painting", "urban gardening",
          "sailing", "photography", "learning Japanese", "beekeeping", "cycling", "poetry", "surfing",
          "knitting", "board games", "volunteering at the shelter", "home brewing", "yoga")
THINGS = ("a red kayak", "a vintage camera", "a greyhound named Comet", "a used piano", "a tent",
          "an electric bike", "a telescope", "a sewing machine", "a cat named Miso", "a sailboat",
          "a drone", "a pottery wheel", "hiking boots", "a violin", "a 3D printer", "a road bike")
WHEN = ("on Monday", "last weekend", "in March", "yesterday", "over the summer", "two weeks ago",
        "before the holidays", "on her birthday", "after work", "in the spring", "last year", "on Friday")
TEMPLATES = (
    "{name} went to {place} {when} and loved it.",
    "{name} started {topic} {when}.",
    "{name} bought {thing} {when}.",
    "{name} said {topic} helps with stress.",
    "{name} is planning a trip to {place} to try {topic}.",
    "{name} gave up {topic} {when} after an injury.",
    "{name} met an old friend in {place} {when}.",
    "{name} sold {thing} {when} because it took too much space.",
    "{name} wants to move to {place} for work.",
    "{name} won a local prize for {topic} {when}.",
    "{name} lent {thing} to a neighbour {when}.",
    "{name} keeps a journal about {topic}.",
)
QUESTIONS = (
    "When did {name} go to {place}?", "What hobby did {name} start?", "What did {name} buy?",
    "Who is interested in {topic}?", "Where does {name} want to move?", "Why did {name} stop {topic}?",
    "Has anyone travelled to {place} recently?", "What does {name} think about {topic}?",
    "Who owns {thing}?", "What happened with {name}'s {topic}?",
)


def log(msg: str) -> None:
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def fill(template: str, rng: np.random.Generator) -> str:
    def pick(words: tuple[str, ...]) -> str:
        return str(words[int(rng.integers(len(words)))])

    return template.format(name=pick(NAMES), place=pick(PLACES), topic=pick(TOPICS), thing=pick(THINGS),
                           when=pick(WHEN))


@dataclass
class Corpus:
    """The pool of real sentences and their real vectors that every synthetic unit derives from."""

    texts: list[str]
    vectors: np.ndarray

    @classmethod
    def make(cls, embedder: Embedder, size: int, seed: int = 7) -> Corpus:
        rng = np.random.default_rng(seed)
        seen: dict[str, None] = {}
        while len(seen) < size:
            seen.setdefault(fill(TEMPLATES[int(rng.integers(len(TEMPLATES)))], rng))
        texts = list(seen)
        return cls(texts, embedder.encode(texts))

    def units(self, start: int, count: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
        """Texts and vectors of units start..start+count: a pool sentence (tagged) and its noisy vector."""
        picks = rng.integers(len(self.texts), size=count)
        noise = rng.normal(0.0, NOISE_SIGMA, size=(count, self.vectors.shape[1])).astype(np.float32)
        vectors = self.vectors[picks] + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        texts = [f"{self.texts[p]} (note {start + i})" for i, p in enumerate(picks.tolist())]
        return texts, vectors


def queries(count: int, seed: int = 11) -> list[str]:
    rng = np.random.default_rng(seed)
    return [fill(QUESTIONS[int(rng.integers(len(QUESTIONS)))], rng) for _ in range(count)]


# --- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"memsvc_scale_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


COPY_COLUMNS = (
    ("user_id", "int8"), ("session_id", "int8"), ("kind", "varchar"), ("unit_key", "varchar"),
    ("text", "text"), ("content_hash", "varchar"), ("source_message_ids", "text[]"),
    ("occurred_at", "timestamptz"), ("attrs", "jsonb"), ("embed_model", "varchar"), ("vector", "bytea"),
    ("salience", "float8"),
)


def copy_units(url: str, units: list[store.NewUnit]) -> None:
    """Bench-only bulk load of the rows `store.insert_units` would write (and their "add" changes),
    by COPY: insert_units runs at hundreds to a few thousand units/s here, too slow to reach 1M."""
    names = ", ".join(c for c, _ in COPY_COLUMNS)
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        row = cur.execute("SELECT coalesce(max(id), 0) FROM memory_unit").fetchone()
        assert row is not None
        with cur.copy(f"COPY memory_unit ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([t for _, t in COPY_COLUMNS])
            for u in units:
                copy.write_row((u.user_id, u.session_id, u.kind, u.unit_key, u.text, u.content_hash,
                                u.source_message_ids, u.occurred_at, Jsonb(u.attrs), u.embed_model,
                                u.vector, 0.0))
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (store.INDEX_CHANGE_LOCK,))  # as publish_changes
        cur.execute("INSERT INTO index_change (user_id, unit_id, op) SELECT user_id, id, 'add' "
                    "FROM memory_unit WHERE id > %s ORDER BY id", (row[0],))


@dataclass
class Fill:
    secret: str
    user_ids: list[int]
    insert_units_per_s: float  # store.insert_units, on the first `sample` units
    copy_units_per_s: float | None  # the bench's COPY, on the rest


def fill_database(url: str, corpus: Corpus, model: str, units: int, users: int, sample: int) -> Fill:
    """`units` spread evenly over `users` users (each user's units contiguous): the first `sample`
    through store.insert_units, the rest by COPY. Throughputs exclude generating the units."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(units + users)
    base = datetime(2023, 1, 1, tzinfo=UTC)
    with transaction(factory) as session:
        key, secret = store.create_key(session, TENANT, "bench")
        user_ids = [store.get_or_create_user(session, key.tenant_id, f"u{i}").id for i in range(users)]
    sizes = [units // users + (1 if i < units % users else 0) for i in range(users)]
    spent = {"insert": 0.0, "copy": 0.0}
    counted = {"insert": 0, "copy": 0}
    done, pending = 0, list(zip(user_ids, sizes, strict=True))
    while pending:
        way = "insert" if done < sample else "copy"
        limit = min(BATCH, sample - done) if way == "insert" else BATCH
        batch: list[store.NewUnit] = []
        while pending and len(batch) < limit:
            user_id, size = pending[0]
            take = min(size, limit - len(batch))
            texts, vectors = corpus.units(done, take, rng)
            batch += [
                store.NewUnit(user_id=user_id, session_id=None, kind="edu", unit_key=f"scale-{done + i}",
                              text=t, content_hash=content_hash(t), source_message_ids=[f"S1:{done + i}"],
                              occurred_at=base + timedelta(minutes=done + i), vector=store.to_blob(v),
                              embed_model=model)
                for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
            ]
            done += take
            pending[0] = (user_id, size - take)
            if size == take:
                pending.pop(0)
        start = time.perf_counter()
        if way == "insert":
            with transaction(factory) as session:
                for user_id in dict.fromkeys(u.user_id for u in batch):
                    store.insert_units(session, [u for u in batch if u.user_id == user_id])
        else:
            copy_units(url, batch)
        spent[way] += time.perf_counter() - start
        counted[way] += len(batch)
        if done % 100_000 < BATCH:
            log(f"  stored {done}/{units}")
    engine.dispose()
    copy_rate = counted["copy"] / spent["copy"] if counted["copy"] else None
    return Fill(secret, user_ids, counted["insert"] / spent["insert"], copy_rate)


# --- measuring --------------------------------------------------------------------------------


def timed_ms(call: Callable[[Any], object], items: Sequence[Any]) -> list[float]:
    out = []
    for item in items:
        start = time.perf_counter()
        call(item)
        out.append((time.perf_counter() - start) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    value = percentile(values, q)
    assert value is not None
    return round(value, 2)


def run_one(server_url: str, corpus: Corpus, embedder: Embedder,
            qs: list[str], units: int, users: int, config: str, sample: int) -> dict[str, Any]:
    wall, load = time.perf_counter(), os.getloadavg()[0]
    with fresh_database(server_url) as url:
        log(f"{config}: {units} units over {users} user(s)")
        fill = fill_database(url, corpus, embedder.model_name, units, users, sample)
        server = LocalServer(env={"MEMSVC_DATABASE_URL": url, "MEMSVC_WORKERS": "0"})
        try:
            # Built into the server's data dir: the server loads these files (its restart path)
            # instead of rebuilding a second time; the build is timed here, from Postgres.
            index = VectorIndex(embedder.model_name, embedder.dim, server.dir / "data" / "index")
            engine = make_engine(url)
            start = time.perf_counter()
            with make_session_factory(engine)() as session:
                recall.rebuild_index(session, index)
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            index.save()
            save_s = time.perf_counter() - start
            engine.dispose()
            user = fill.user_ids[0]
            log(f"  index {index.index_type(user)} built in {build_s:.1f} s; measuring raw costs")
            embedder.encode(qs[:WARMUP])
            embed_ms = timed_ms(lambda q: embedder.encode([q]), qs)
            qvecs = embedder.encode(qs)
            faiss_ms = timed_ms(lambda v: index.search(user, v, K), list(qvecs))
            approx = index.index_type(user).startswith("IVF")
            recall_at_10 = index.approx_recall(user, qvecs[:RECALL_QUERIES], 10) if approx else None
            index_type = index.index_type(user)
            index.clear()  # frees its memory before the server loads its own copy
            start = time.perf_counter()
            with server:
                server_start_s = time.perf_counter() - start
                client = MemsvcClient(http_client(server.url, fill.secret))
                search_ms: dict[str, list[float]] = {}
                for mode in ("fast", "deep"):

                    def one(q: str, mode: str = mode) -> object:
                        return client.search("u0", q, mode, SEARCH_TOKENS, SEARCH_LIMIT)

                    for q in qs[:WARMUP]:
                        one(q)
                    search_ms[mode] = timed_ms(one, qs)
                client.http.close()
                server_rss = server.peak_rss_mb
        finally:
            server.close()
    raw = p(embed_ms, 95) + p(faiss_ms, 95)
    return {
        "config": config, "units": units, "users": users, "user_units": units // users + (units % users > 0),
        "insert_units_per_s": round(fill.insert_units_per_s, 1),
        "insert_sample_units": min(units, sample),
        "copy_units_per_s": None if fill.copy_units_per_s is None else round(fill.copy_units_per_s, 1),
        "index_build_units_per_s": round(units / build_s, 1),
        "index_save_s": round(save_s, 2), "server_start_s": round(server_start_s, 2),
        "search_fast_p50_ms": p(search_ms["fast"], 50), "search_fast_p95_ms": p(search_ms["fast"], 95),
        "search_deep_p50_ms": p(search_ms["deep"], 50), "search_deep_p95_ms": p(search_ms["deep"], 95),
        "embed_p50_ms": p(embed_ms, 50), "embed_p95_ms": p(embed_ms, 95),
        "faiss_p50_ms": p(faiss_ms, 50), "faiss_p95_ms": p(faiss_ms, 95),
        "overhead_ratio": round(p(search_ms["fast"], 95) / raw, 3),
        "overhead_ratio_deep": round(p(search_ms["deep"], 95) / raw, 3),
        "index_type": index_type,
        "approx_recall_at_10": None if recall_at_10 is None else round(recall_at_10, 4),
        "peak_rss_server_mb": None if server_rss is None else round(server_rss, 1),
        "peak_rss_bench_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_avg_1m": round(load, 2), "wall_s": round(time.perf_counter() - wall, 1),
    }


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    sizes = [int(s) for s in str(args.units).replace("_", "").split(",") if s]
    configs = [c for c in ("single-user", "many-users") if c.split("-")[0] in args.configs.split(",")]
    settings = get_settings()
    embedder = get_embedder(
        settings.embed_model, settings.embed_device, settings.embed_batch_size, settings.embed_threads
    )
    corpus = Corpus.make(embedder, args.pool)
    qs = queries(args.queries)
    runs: list[dict[str, Any]] = []
    skipped: list[str] = []

    command = " ".join(["memsvc", *sys.argv[1:]]) if sys.argv[0].endswith("memsvc") else str(vars(args))

    def write() -> None:  # after every run, so a long run that is stopped still leaves its results
        doc = {
            "command": command,
            "machine": machine(embedder.device), "pool": args.pool, "queries": len(qs), "k": K,
            "approx_threshold": VectorIndex("", 1, None).approx_threshold,
            "insert_sample": args.insert_sample, "max_minutes": args.max_minutes,
            "vectors": f"Unit vectors: {args.pool} real template sentences encoded with "
                       f"{embedder.model_name}, "
                       f"each unit = one of them + N(0, {NOISE_SIGMA}^2) noise per dimension, renormalized "
                       "(clustered, so kinder to IVF than real memory). Queries are real embeddings.",
            "runs": runs, "skipped": skipped, "wall_s": round(time.perf_counter() - started, 1),
        }
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(doc))
        plot(doc, out.with_suffix(".png"))

    with postgres_server(args.database_url) as server_url:
        for units in sizes:
            for config in configs:
                name = f"{config}@{units}"
                if time.perf_counter() - started > args.max_minutes * 60:
                    skipped.append(name)
                    log(f"skipping {name}: the {args.max_minutes} min budget is spent")
                    continue
                users = 1 if config == "single-user" else max(1, min(args.users, units))
                runs.append(
                    run_one(server_url, corpus, embedder, qs, units, users, config, args.insert_sample)
                )
                log(f"  {runs[-1]}")
                write()
    write()
    log(f"wrote {args.json} and its .md and .png")
    return 0
