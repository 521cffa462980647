"""LLM extraction: EDUs from an OpenAI-compatible chat endpoint, rate-limited, retried, rules as fallback."""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from memsvc.extract import Edu, RulesExtractor, Turn, canonical_name, split_caption
from memsvc.temporal import format_day
from memsvc.tokens import TOKENS_PER_WORD

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class LlmError(Exception):
    """The endpoint gave no usable answer; the message is the fallback reason recorded."""


@dataclass(frozen=True)
class Extraction:
    edus: tuple[Edu, ...]
    extractor: str  # "llm", or "rules" when the batch fell back
    fallback_reason: str | None


class TokenBudget:
    """A token bucket refilled continuously at `tokens_per_minute`; `acquire` blocks until it can pay."""

    def __init__(
        self,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.capacity = float(tokens_per_minute)
        self._rate = tokens_per_minute / 60.0
        self._tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self, tokens: int) -> float:
        """Takes `tokens` (capped at the capacity, so a huge prompt waits at most a minute); returns the
        seconds waited."""
        need = min(float(tokens), self.capacity)
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
                self._at = now
                if self._tokens >= need:
                    self._tokens -= need
                    return waited
                wait = (need - self._tokens) / self._rate
            self._sleep(wait)
            waited += wait


class _LlmEdu(BaseModel):
    edu_text: str = Field(min_length=1)
    source_turn_ids: list[str] = Field(min_length=1)
    occurred_on: date | None = None
    time_cue: str | None = None
    entities: list[str] = Field(default_factory=list)


class _LlmAnswer(BaseModel):
    edus: list[_LlmEdu]


RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "edus", "strict": True, "schema": _LlmAnswer.model_json_schema()},
}

SYSTEM_PROMPT = """You turn a conversation into elementary discourse units (EDUs) for long-term memory.
Each EDU is one short, self-contained statement of a fact, event, plan, opinion or preference.
- Replace every pronoun with the person's name (I/you/we/my/your -> names); use each entity's full name.
- Fill in time: turn relative dates ("yesterday", "last week") into absolute dates from the message date,
  keeping the original words, e.g. "yesterday (7 May 2023)"; set occurred_on (YYYY-MM-DD) and time_cue.
- Skip small talk (greetings, thanks, compliments without content). Lose no fact. Keep image contents.
- source_turn_ids: the ids of the turns the EDU comes from, most important first.
- entities: the people, places, organisations, things and topics the EDU mentions.
Answer with JSON only: {"edus": [{"edu_text": str, "source_turn_ids": [str], "occurred_on": str|null,
"time_cue": str|null, "entities": [str]}]}"""


def build_messages(turns: Sequence[Turn], participants: Sequence[str]) -> list[dict[str, str]]:
    lines = [
        f"[{t.message_id}] {t.speaker} ({format_day(t.created_at.astimezone(UTC).date())}): {t.content}"
        for t in turns
    ]
    user = f"Participants: {', '.join(participants)}\n\nConversation:\n" + "\n".join(lines)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    return math.ceil(sum(len(m["content"].split()) for m in messages) * TOKENS_PER_WORD)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


class LlmExtractor:
    """EDUs from an LLM. Any failure (HTTP error after retries, time-out, malformed or schema-invalid JSON,
    no usable EDU) makes that batch fall back to RulesExtractor: `extract_with_report` says which ran and
    why; `extract` returns the EDUs and leaves the reason in `last_fallback_reason` (and the log), which
    is racy across threads, so concurrent callers should use `extract_with_report`.

    Time-outs are not retried: the endpoint is overloaded or the batch too big, and the rules fallback
    is immediate; 429/5xx and connection errors are retried with jittered exponential backoff, honouring
    Retry-After."""

    name = "llm"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_concurrency: int = 4,
        tokens_per_minute: int = 200_000,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), headers=headers)
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.budget = TokenBudget(tokens_per_minute)
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self._rules = RulesExtractor()
        self._jitter = random.Random()
        self.last_fallback_reason: str | None = None

    def close(self) -> None:
        self._client.close()

    def extract(self, turns: Sequence[Turn], participants: Sequence[str]) -> list[Edu]:
        result = self.extract_with_report(turns, participants)
        self.last_fallback_reason = result.fallback_reason
        return list(result.edus)

    def extract_with_report(self, turns: Sequence[Turn], participants: Sequence[str]) -> Extraction:
        if not turns:
            return Extraction((), self.name, None)
        try:
            content = self._complete(build_messages(turns, participants))
            edus = self._parse(content, turns, participants)
        except LlmError as err:
            reason = str(err)
            log.warning("llm extraction failed, rules used for %d turns: %s", len(turns), reason)
            return Extraction(tuple(self._rules.extract(turns, participants)), "rules", reason)
        return Extraction(tuple(edus), self.name, None)

    def _complete(self, messages: list[dict[str, str]]) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "response_format": RESPONSE_FORMAT,
        }
        self.budget.acquire(estimate_tokens(messages))
        for attempt in range(self.max_retries + 1):
            try:
                with self._slots:
                    response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as err:
                raise LlmError(f"timeout after {self.timeout_s:g}s ({type(err).__name__})") from err
            except httpx.TransportError as err:
                problem, wait = f"transport error: {err}", None
            else:
                if response.status_code == 200:
                    return self._content(response)
                problem, wait = f"HTTP {response.status_code}", _retry_after(response)
                if response.status_code not in RETRY_STATUSES:
                    raise LlmError(f"{problem}: {response.text[:200]}")
            if attempt == self.max_retries:
                raise LlmError(f"{problem} after {attempt + 1} attempts")
            if wait is None:  # full jitter: spreads retries of many workers hitting one endpoint
                wait = self._jitter.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))
            time.sleep(min(wait, self.max_backoff_s))
        raise AssertionError("unreachable")

    @staticmethod
    def _content(response: httpx.Response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise LlmError(f"not a chat completion: {err!r}") from err
        if not isinstance(content, str):
            raise LlmError("chat completion without text content")
        return content

    def _parse(self, content: str, turns: Sequence[Turn], participants: Sequence[str]) -> list[Edu]:
        try:
            raw = json.loads(content)
        except json.JSONDecodeError as err:
            raise LlmError(f"invalid JSON: {err}") from err
        try:
            answer = _LlmAnswer.model_validate(raw)
        except ValidationError as err:
            raise LlmError(f"JSON does not match the schema: {err.error_count()} errors, first: "
                           f"{err.errors()[0]['loc']} {err.errors()[0]['msg']}") from err  # fmt: skip
        by_id = {t.message_id: t for t in turns}
        people = list(dict.fromkeys([*participants, *(t.speaker for t in turns)]))
        edus = []
        for item in answer.edus:
            ids = tuple(dict.fromkeys(i for i in item.source_turn_ids if i in by_id))
            if not ids:  # the model invented its source: the statement cannot be attributed
                continue
            first = by_id[ids[0]]
            occurred = (
                datetime(item.occurred_on.year, item.occurred_on.month, item.occurred_on.day, tzinfo=UTC)
                if item.occurred_on
                else first.created_at
            )
            entities = [canonical_name(e.strip(), people) or e.strip() for e in item.entities if e.strip()]
            text = item.edu_text.strip()
            edus.append(
                Edu(
                    text=f"{first.speaker} ({format_day(first.created_at.astimezone(UTC).date())}): {text}",
                    source_message_ids=ids,
                    speakers=tuple(dict.fromkeys(by_id[i].speaker for i in ids)),
                    occurred_at=occurred,
                    time_cue=item.time_cue,
                    entities=tuple(dict.fromkeys(entities)),
                )
            )
        if not edus and any(split_caption(t.content)[0].strip() for t in turns):
            raise LlmError("no usable EDU in the answer")
        return edus
