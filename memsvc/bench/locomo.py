"""LoCoMo-format data: loading, the known-defect repairs, and the turn/question model the bench uses."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# By the dataset's own counts, not the paper's listing order (a common mix-up, see data/README.md).
CATEGORIES: dict[int, str] = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
ADVERSARIAL = 5

# Spacing between turns of one session: the dataset dates a session, not its turns, and the service
# orders messages by created_at, so each turn gets a distinct, increasing time.
TURN_SPACING = timedelta(seconds=5)

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["january", "february", "march", "april", "may", "june", "july", "august",
         "september", "october", "november", "december"]
    )
}
# "1:56 pm on 8 May, 2023"; parsed by hand because strptime's %B and %p follow the process locale.
_DATE_RE = re.compile(
    r"^\s*(\d{1,2}):(\d{2})\s*([ap])\.?m\.?\s+on\s+(\d{1,2})\s+([a-z]+),?\s+(\d{4})\s*$", re.IGNORECASE
)
# One evidence id with the dataset's spelling slips: "D:11:26", "D30:05", "d3:4".
_EVIDENCE_RE = re.compile(r"^D:?(\d+):(\d+)$", re.IGNORECASE)
_SESSION_KEY_RE = re.compile(r"^session_(\d+)$")


class DataError(ValueError):
    """The file is not LoCoMo-format data the bench can use."""


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str  # with the image caption appended, as every consumer of the turn sees it
    session: int
    created_at: datetime

    @property
    def unit_text(self) -> str:
        """The text of this turn as one retrieval unit of the turn-level baselines."""
        return f"{self.speaker}: {self.text}"


@dataclass(frozen=True)
class Question:
    question: str
    category: int
    evidence: tuple[str, ...]  # normalized, deduplicated, each pointing to a turn of the conversation

    @property
    def category_name(self) -> str:
        return CATEGORIES[self.category]


@dataclass(frozen=True)
class Conversation:
    sample_id: str
    sessions: tuple[tuple[int, tuple[Turn, ...]], ...]  # (session number, turns), in session order
    questions: tuple[Question, ...]  # only the scorable ones: categories 1-4 with evidence left
    skipped: int  # questions of categories 1-4 dropped for lack of valid evidence

    @property
    def turns(self) -> list[Turn]:
        return [t for _, turns in self.sessions for t in turns]


def parse_session_date(raw: str) -> datetime:
    """A LoCoMo session date as a timezone-aware UTC datetime (the dataset has no zone; UTC is taken)."""
    m = _DATE_RE.match(raw)
    if m is None:
        raise DataError(f"unrecognized session date {raw!r}")
    hour, minute, ampm, day, month_name, year = m.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        raise DataError(f"unknown month in session date {raw!r}")
    h = int(hour) % 12 + (12 if ampm.lower() == "p" else 0)
    return datetime(int(year), month, int(day), h, int(minute), tzinfo=UTC)


def turn_text(turn: dict[str, Any]) -> str:
    """The turn's text with its image (if any) described inline, so image-only facts stay findable."""
    text = str(turn.get("text", ""))
    caption = turn.get("blip_caption")
    if caption:
        text = f"{text} [shares an image: {caption}]"
    return text


def normalize_evidence(raw: list[str], known: set[str]) -> tuple[str, ...]:
    """Repairs the dataset's malformed ids; keeps only ids that point to a turn, first occurrence first."""
    out: list[str] = []
    for item in raw:
        for piece in re.split(r"[;,\s]+", str(item)):
            m = _EVIDENCE_RE.match(piece.strip())
            if m is None:
                continue
            dia_id = f"D{int(m.group(1))}:{int(m.group(2))}"
            if dia_id in known and dia_id not in out:
                out.append(dia_id)
    return tuple(out)


def parse_conversation(sample: dict[str, Any]) -> Conversation:
    conv = sample.get("conversation")
    if not isinstance(conv, dict):
        raise DataError("sample without a 'conversation' object")
    sample_id = str(sample.get("sample_id", ""))
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_KEY_RE.match(k)))
    sessions: list[tuple[int, tuple[Turn, ...]]] = []
    for n in numbers:
        raw_turns = conv[f"session_{n}"]
        if not raw_turns:
            continue
        start = parse_session_date(str(conv.get(f"session_{n}_date_time", "")))
        turns = tuple(
            Turn(
                dia_id=str(t["dia_id"]),
                speaker=str(t["speaker"]),
                text=turn_text(t),
                session=n,
                created_at=start + i * TURN_SPACING,
            )
            for i, t in enumerate(raw_turns)
        )
        sessions.append((n, turns))
    known = {t.dia_id for _, turns in sessions for t in turns}
    questions: list[Question] = []
    skipped = 0
    for qa in sample.get("qa", []):
        category = int(qa.get("category", 0))
        if category not in CATEGORIES:
            continue  # adversarial questions have no evidence to recall; scored apart, not here
        evidence = normalize_evidence(list(qa.get("evidence", [])), known)
        if not evidence:
            skipped += 1
            continue
        questions.append(Question(str(qa["question"]), category, evidence))
    return Conversation(sample_id, tuple(sessions), tuple(questions), skipped)


def load(path: Path, only: list[str] | None = None) -> list[Conversation]:
    """The conversations in `path`, restricted to the sample ids in `only` (in file order) if given."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of samples")
    convs = [parse_conversation(s) for s in data]
    if only:
        missing = set(only) - {c.sample_id for c in convs}
        if missing:
            raise DataError(f"{path}: no conversation {', '.join(sorted(missing))}")
        convs = [c for c in convs if c.sample_id in only]
    return convs
