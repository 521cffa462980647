"""Evidence recall inside a token budget, scored exactly as CONTRACT.md says outside evaluations do."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from memsvc.bench.locomo import CATEGORIES
from memsvc.tokens import count_tokens

SOURCES_PER_HIT = 3


@dataclass(frozen=True)
class Hit:
    """What the scorer reads of one search hit: its text (the cost) and the message ids it credits."""

    text: str
    source_message_ids: tuple[str, ...]


def hits_from_json(raw: Iterable[Mapping[str, object]]) -> list[Hit]:
    """Hits of a search answer; a hit without text or sources still costs what its text costs."""
    out: list[Hit] = []
    for h in raw:
        text = h.get("text")
        sources = h.get("source_message_ids")
        ids = tuple(str(s) for s in sources) if isinstance(sources, list) else ()
        out.append(Hit(text if isinstance(text, str) else "", ids))
    return out


def credited(hits: Sequence[Hit], budget: int) -> set[str]:
    """Message ids credited by the hits that fit into `budget` tokens.

    The budget is a prefix of the ranking: hits are read in rank order and the scan ends at the
    first hit whose text would take the total past the budget. Skipping it and packing smaller,
    lower-ranked hits instead would reward a system for what a reader filling a prompt in rank
    order never sees. Each hit credits at most its first 3 source ids ("most important first").
    """
    used = 0
    found: set[str] = set()
    for hit in hits:
        used += count_tokens(hit.text)
        if used > budget:
            break
        found.update(hit.source_message_ids[:SOURCES_PER_HIT])
    return found


def recall(hits: Sequence[Hit], evidence: Sequence[str], budget: int) -> float:
    """|credited ∩ evidence| / |evidence| for one question."""
    wanted = set(evidence)
    if not wanted:
        raise ValueError("a question without evidence cannot be scored")
    return len(credited(hits, budget) & wanted) / len(wanted)


@dataclass(frozen=True)
class Scored:
    """One question's recall under one system, with the category it counts toward."""

    category: int
    recall: float


def summarize(scores: Sequence[Scored]) -> dict[str, float | int | None]:
    """Mean recall per category name and over all ("all"), plus "n"; an empty category is null."""
    out: dict[str, float | int | None] = {
        "all": sum(s.recall for s in scores) / len(scores) if scores else None
    }
    for cat, name in CATEGORIES.items():
        vals = [s.recall for s in scores if s.category == cat]
        out[name] = sum(vals) / len(vals) if vals else None
    out["n"] = len(scores)
    return out
