"""LlmExtractor against a local scripted OpenAI-compatible server: parsing, fallbacks, retries, limits."""

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from memsvc.extract import RulesExtractor, Turn, make_extractor
from memsvc.llm import LlmExtractor, TokenBudget

# tests/ is not a package and pyproject sets no pythonpath: make the shared fake importable either way.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from factories import (  # noqa: E402
    cited,
    drain,
    ingest,
    job_status,
    make_settings,
    make_tenant_key,
    message,
    search,
    unique,
    user_row_id,
)
from fake_llm import Reply, edus_reply, fake_llm  # noqa: E402

SAID = datetime(2023, 6, 12, 15, 0, tzinfo=UTC)
PEOPLE = ["Nadia", "Owen"]
TURNS = [
    Turn("s3:1", "Nadia", "user", "I adopted a rescue greyhound named Biscuit last Saturday!", SAID),
    Turn("s3:2", "Owen", "user", "No way! Is Biscuit settling in with your cat?", SAID),
    Turn("s3:3", "Nadia", "user", "Mostly, Pepper hides under the bed when Biscuit runs around.", SAID),
]
GOOD = [
    {
        "edu_text": "Nadia adopted a rescue greyhound named Biscuit last Saturday (10 June 2023).",
        "source_turn_ids": ["s3:1"],
        "occurred_on": "2023-06-10",
        "time_cue": "last Saturday",
        "entities": ["Nadia", "Biscuit", "greyhound"],
    },
    {
        "edu_text": "Nadia's cat Pepper hides under the bed when Biscuit runs around.",
        "source_turn_ids": ["s3:3", "s3:2", "s9:9"],  # s9:9 is not in the batch
        "occurred_on": None,
        "time_cue": None,
        "entities": ["Pepper", "Biscuit"],
    },
    {
        "edu_text": "An invented statement.",
        "source_turn_ids": ["s9:9"],
        "occurred_on": None,
        "time_cue": None,
        "entities": [],
    },
]


def extractor(url: str, **kw: float) -> LlmExtractor:
    options = {"timeout_s": 5.0, "max_retries": 2, "backoff_s": 0.05, "max_backoff_s": 2.0, **kw}
    return LlmExtractor(base_url=url, model="test-model", api_key="sk-test", **options)  # type: ignore[arg-type]


def test_valid_answer_is_parsed_and_attributed() -> None:
    with fake_llm(edus_reply(GOOD)) as llm:
        ex = extractor(llm.base_url)
        report = ex.extract_with_report(TURNS, PEOPLE)
    assert report.extractor == "llm" and report.fallback_reason is None
    first, second = report.edus  # the EDU citing only an unknown turn is dropped
    assert first.text == (
        "Nadia (12 June 2023): Nadia adopted a rescue greyhound named Biscuit last Saturday (10 June 2023)."
    )
    assert first.source_message_ids == ("s3:1",)
    assert first.occurred_at == datetime(2023, 6, 10, tzinfo=UTC)
    assert first.time_cue == "last Saturday"
    assert first.entities == ("Nadia", "Biscuit", "greyhound")
    # speakers come from the cited turns, not from the model; unknown ids are dropped
    assert second.source_message_ids == ("s3:3", "s3:2")
    assert second.speakers == ("Nadia", "Owen")
    assert second.occurred_at == SAID
    request = llm.requests[0]
    assert request["model"] == "test-model"
    assert request["response_format"]["type"] == "json_schema"
    assert "[s3:2] Owen (12 June 2023): No way!" in request["messages"][1]["content"]
    assert llm.headers[0]["authorization"] == "Bearer sk-test"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(content='{"edus": [{"edu_text": "Nadia adopted'), "invalid JSON"),
        (Reply(content='{"edus": [{"text": "Nadia adopted a dog", "turns": [1]}]}'), "schema"),
        (
            Reply(
                content='{"edus": [{"edu_text": "x", "source_turn_ids": ["s3:1"], "occurred_on": "June"}]}'
            ),
            "schema",
        ),
        (Reply(content='{"edus": []}'), "no usable EDU"),
        (Reply(status=400), "HTTP 400"),
    ],
)
def test_broken_answers_fall_back_to_rules_with_the_reason(reply: Reply, reason: str) -> None:
    with fake_llm(reply) as llm:
        ex = extractor(llm.base_url)
        edus = ex.extract(TURNS, PEOPLE)
    assert ex.last_fallback_reason is not None and reason in ex.last_fallback_reason
    assert edus == RulesExtractor().extract(TURNS, PEOPLE)
    assert any("Biscuit" in e.text for e in edus)


def test_slow_endpoint_times_out_and_falls_back() -> None:
    with fake_llm(edus_reply(GOOD, delay_s=3.0)) as llm:
        ex = extractor(llm.base_url, timeout_s=0.5)
        started = time.monotonic()
        report = ex.extract_with_report(TURNS, PEOPLE)
        elapsed = time.monotonic() - started
    assert report.extractor == "rules"
    assert report.fallback_reason is not None and "timeout" in report.fallback_reason
    assert elapsed < 2.0
    assert len(llm.requests) == 1  # a time-out is not retried


def test_429_is_retried_after_retry_after() -> None:
    with fake_llm(Reply(status=429, headers={"Retry-After": "1"}), edus_reply(GOOD)) as llm:
        ex = extractor(llm.base_url)
        report = ex.extract_with_report(TURNS, PEOPLE)
        gap = llm.times[1] - llm.times[0]
    assert report.extractor == "llm" and len(report.edus) == 2
    assert len(llm.requests) == 2
    assert gap >= 0.95  # waited as told, not the 0.05 s backoff


def test_persistent_500_retries_then_falls_back() -> None:
    with fake_llm(Reply(status=500)) as llm:
        ex = extractor(llm.base_url, max_retries=2)
        report = ex.extract_with_report(TURNS, PEOPLE)
    assert len(llm.requests) == 3
    assert report.extractor == "rules"
    assert report.fallback_reason == "HTTP 500 after 3 attempts"


def test_concurrency_is_bounded() -> None:
    with fake_llm(edus_reply(GOOD, delay_s=0.3)) as llm:
        ex = extractor(llm.base_url, max_concurrency=2)
        with ThreadPoolExecutor(max_workers=8) as pool:
            reports = list(pool.map(lambda _: ex.extract_with_report(TURNS, PEOPLE), range(8)))
    assert all(r.extractor == "llm" for r in reports)
    assert len(llm.requests) == 8
    assert llm.peak_in_flight == 2


def test_token_budget_makes_callers_wait() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    budget = TokenBudget(600, clock=lambda: now[0], sleep=sleep)  # 10 tokens a second
    assert budget.acquire(500) == 0.0
    assert budget.acquire(200) == pytest.approx(10.0)  # 100 left, 100 more take 10 s
    assert budget.acquire(5000) == pytest.approx(60.0)  # capped at one minute's worth
    assert sum(slept) == pytest.approx(70.0)


def test_make_extractor() -> None:
    assert make_extractor("rules").name == "rules"
    llm = make_extractor("llm", llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_max_concurrency=3)
    assert isinstance(llm, LlmExtractor) and llm.url == "http://127.0.0.1:9/v1/chat/completions"
    with pytest.raises(ValueError, match="llm_base_url"):
        make_extractor("llm")
    with pytest.raises(ValueError, match="unknown extractor"):
        make_extractor("spacy")


def test_ingest_completes_on_the_offline_path_when_the_llm_fails(
    client: TestClient, database_url: str, engine: Engine
) -> None:
    key, user = make_tenant_key(client), unique("u")
    turns = [
        message(t.message_id, t.content, speaker=t.speaker, created_at=t.created_at.isoformat())
        for t in TURNS
    ]
    job_id = ingest(client, key, user, "s3", turns)["job_id"]
    with fake_llm(Reply(status=500)) as llm:
        settings = make_settings(
            database_url, extractor="llm", llm_base_url=llm.base_url, llm_model="m", llm_timeout_s=2.0
        )
        drain(settings, database_url)
    assert llm.requests, "the worker did try the LLM"
    assert job_status(client, key, job_id)["status"] == "done"
    with engine.connect() as conn:
        uid = user_row_id(conn, key, user)
        edus = (
            conn.execute(
                text("SELECT attrs->>'extractor' FROM memory_unit WHERE user_id = :u AND kind = 'edu'"),
                {"u": uid},
            )
            .scalars()
            .all()
        )
    assert edus and set(edus) == {"rules"}, edus
    assert "s3:1" in cited(search(client, key, user, "What is the name of Nadia's greyhound?"))
