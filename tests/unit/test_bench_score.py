"""The LoCoMo bench's scorer and data repairs, on hand-made cases (no dataset, no model, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from memsvc.bench.client import BenchError, MemsvcClient
from memsvc.bench.locomo import (
    DataError,
    load,
    normalize_evidence,
    parse_conversation,
    parse_session_date,
    turn_text,
)
from memsvc.bench.runner import Results, register_questions, run_memsvc
from memsvc.bench.score import Hit, Scored, credited, hits_from_json, recall, summarize
from memsvc.lexical import rrf, tokenize


def words(n: int) -> str:
    """A text of n words: ceil(n x 1.33) tokens."""
    return " ".join(["w"] * n)


# --- budget --------------------------------------------------------------------------------------


def test_budget_is_a_rank_order_prefix_that_stops_at_the_first_hit_that_does_not_fit() -> None:
    hits = [
        Hit(words(300), ("D1:1",)),  # 399 tokens
        Hit(words(300), ("D1:2",)),  # 798 in all
        Hit(words(300), ("D1:3",)),  # 1197: past 1000, the scan ends here
        Hit(words(3), ("D1:4",)),  # would fit on its own, but is never read
    ]
    assert credited(hits, 1000) == {"D1:1", "D1:2"}
    assert recall(hits, ["D1:4"], 1000) == 0.0
    assert recall(hits, ["D1:3"], 2000) == 1.0


def test_a_hit_that_exactly_fills_the_budget_counts() -> None:
    hits = [Hit(words(300), ("D1:1",)), Hit(words(451), ("D1:2",))]  # 399 + 600 = 999
    assert credited(hits, 999) == {"D1:1", "D1:2"}
    assert credited(hits, 998) == {"D1:1"}


def test_a_first_hit_larger_than_the_budget_credits_nothing() -> None:
    assert credited([Hit(words(800), ("D1:1",)), Hit("short", ("D1:2",))], 1000) == set()


def test_each_hit_credits_at_most_its_first_three_sources() -> None:
    hits = [Hit("one fact", ("D1:1", "D1:2", "D1:3", "D1:4", "D1:5"))]
    assert credited(hits, 1000) == {"D1:1", "D1:2", "D1:3"}
    assert recall(hits, ["D1:2", "D1:5"], 1000) == 0.5


def test_recall_counts_each_evidence_id_once() -> None:
    hits = [Hit("a", ("D1:1",)), Hit("b", ("D1:1",)), Hit("c", ("D2:1",))]
    assert recall(hits, ["D1:1", "D2:1", "D3:1"], 100) == pytest.approx(2 / 3)


def test_hits_from_json_reads_text_and_sources_and_tolerates_missing_fields() -> None:
    hits = hits_from_json([
        {"text": "x y", "source_message_ids": ["D1:1", "D1:2"], "score": 0.3},
        {"source_message_ids": ["D1:3"]},
        {"text": "z", "source_message_ids": None},
    ])
    assert hits == [Hit("x y", ("D1:1", "D1:2")), Hit("", ("D1:3",)), Hit("z", ())]


def test_summary_averages_per_category_and_overall_and_nulls_empty_categories() -> None:
    out = summarize([Scored(1, 1.0), Scored(1, 0.0), Scored(4, 1.0), Scored(2, 0.5)])
    assert out == {"all": 0.625, "multi-hop": 0.5, "temporal": 0.5, "open-domain": None,
                   "single-hop": 1.0, "n": 4}


# --- data repairs ----------------------------------------------------------------------------------

KNOWN = {"D8:6", "D9:17", "D11:26", "D30:5", "D1:1"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["D8:6; D9:17"], ("D8:6", "D9:17")),
        (["D:11:26"], ("D11:26",)),
        (["D30:05"], ("D30:5",)),
        (["D1:1", "D1:1"], ("D1:1",)),
        (["D99:1", "D1:1"], ("D1:1",)),  # points to no turn: dropped
        (["nonsense", ""], ()),
    ],
)
def test_evidence_ids_are_repaired_and_dangling_ones_dropped(
    raw: list[str], expected: tuple[str, ...]
) -> None:
    assert normalize_evidence(raw, KNOWN) == expected


def test_session_dates_become_utc_datetimes() -> None:
    assert parse_session_date("1:56 pm on 8 May, 2023") == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)
    assert parse_session_date("12:09 am on 13 September, 2023") == datetime(2023, 9, 13, 0, 9, tzinfo=UTC)
    assert parse_session_date("12:30 pm on 1 January, 2024") == datetime(2024, 1, 1, 12, 30, tzinfo=UTC)
    with pytest.raises(DataError):
        parse_session_date("yesterday")


def test_captions_are_appended_to_the_turn_text() -> None:
    assert turn_text({"text": "Look!", "blip_caption": "a photo of a dog"}) == (
        "Look! [shares an image: a photo of a dog]"
    )
    assert turn_text({"text": "No image."}) == "No image."


def sample() -> dict[str, Any]:
    return {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob",
            "session_2_date_time": "9:00 am on 2 May, 2023",
            "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "Later."}],
            "session_1_date_time": "8:00 pm on 1 May, 2023",
            "session_1": [
                {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi."},
                {"speaker": "Bob", "dia_id": "D1:2", "text": "Look.", "blip_caption": "a cat",
                 "img_url": ["http://x"]},
            ],
        },
        "qa": [
            {"question": "q1", "answer": "a", "evidence": ["D1:2"], "category": 1},
            {"question": "q2", "answer": "a", "evidence": ["D1:1; D2:1"], "category": 2},
            {"question": "q3", "answer": "a", "evidence": ["D1:1"], "category": 3},
            {"question": "q4", "answer": "a", "evidence": ["D:2:1"], "category": 4},
            {"question": "q5", "adversarial_answer": "a", "evidence": ["D1:1"], "category": 5},
            {"question": "q6", "answer": "a", "evidence": ["D7:7"], "category": 4},
            {"question": "q7", "answer": "a", "evidence": [], "category": 3},
        ],
    }


def test_conversation_keeps_session_order_times_and_only_scorable_questions() -> None:
    conv = parse_conversation(sample())
    assert [n for n, _ in conv.sessions] == [1, 2]
    turns = conv.turns
    assert [t.dia_id for t in turns] == ["D1:1", "D1:2", "D2:1"]
    assert turns[0].created_at == datetime(2023, 5, 1, 20, 0, tzinfo=UTC)
    assert turns[0].created_at < turns[1].created_at < turns[2].created_at
    assert turns[1].unit_text == "Bob: Look. [shares an image: a cat]"
    assert [(q.question, q.category_name, q.evidence) for q in conv.questions] == [
        ("q1", "multi-hop", ("D1:2",)),
        ("q2", "temporal", ("D1:1", "D2:1")),
        ("q3", "open-domain", ("D1:1",)),
        ("q4", "single-hop", ("D2:1",)),
    ]
    assert conv.skipped == 2  # q6 (dangling id) and q7 (no evidence); q5 is adversarial, not skipped


def test_load_selects_conversations_and_rejects_unknown_ones(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    other = sample() | {"sample_id": "conv-y"}
    path.write_text(json.dumps([sample(), other]))
    assert [c.sample_id for c in load(path, ["conv-y"])] == ["conv-y"]
    with pytest.raises(DataError, match="conv-z"):
        load(path, ["conv-z"])


# --- baselines -------------------------------------------------------------------------------------


def test_tokenizer_lowercases_stems_and_drops_stopwords_and_single_characters() -> None:
    assert tokenize("When did Caroline go to the LGBTQ support groups? A") == [
        "when", "did", "carolin", "go", "lgbtq", "support", "group"
    ]
    assert tokenize("researching") == tokenize("research") == tokenize("researched")


def test_rrf_rewards_units_ranked_well_by_both() -> None:
    assert rrf([[0, 1, 2, 3], [3, 1, 2, 0]])[0] == 1  # 2/62 beats 1/61 + 1/64
    assert rrf([[5], [5, 6]]) == [5, 6]


# --- the memsvc side, through a fake transport -------------------------------------------------------


def test_memsvc_run_posts_sessions_in_order_scores_hits_and_deletes_users() -> None:
    conv = parse_conversation(sample())
    posted: list[tuple[str, list[str], str]] = []
    deleted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/messages"):
            body = json.loads(request.content)
            assert body["wait"] is True
            posted.append((path.split("/")[5], [m["id"] for m in body["messages"]],
                           body["messages"][0]["created_at"]))
            return httpx.Response(202, json={"job_id": f"j{len(posted)}", "accepted": 1, "duplicates": 0})
        if path.startswith("/v1/jobs/"):
            return httpx.Response(200, json={"id": path, "status": "done", "error": None})
        if path.endswith("/search"):
            body = json.loads(request.content)
            # Always the same ranking: a big hit first, then the cat turn; only a 2000 budget reaches it.
            hits = [{"text": words(900), "source_message_ids": ["D1:1"]},
                    {"text": "Bob shared a cat picture", "source_message_ids": ["D1:2"]}]
            return httpx.Response(200, json={"hits": hits, "context": "", "context_tokens": 0,
                                             "limit_seen": body["limit"]})
        if request.method == "DELETE":
            deleted.append(path)
            return httpx.Response(204)
        return httpx.Response(404, json={"detail": "not found"})

    res = Results()
    register_questions([conv], res)
    with httpx.Client(base_url="http://memsvc", transport=httpx.MockTransport(handler)) as http:
        run_memsvc([conv], MemsvcClient(http), res)

    assert [(s, ids) for s, ids, _ in posted] == [("session-1", ["D1:1", "D1:2"]), ("session-2", ["D2:1"])]
    assert posted[0][2] == "2023-05-01T20:00:00+00:00"
    table = res.recall_table()
    assert table["memsvc-deep@B1000"]["multi-hop"] == 0.0  # 1197 tokens before the cat turn
    assert table["memsvc-deep@B2000"]["multi-hop"] == 1.0
    assert table["memsvc-deep@B2000"]["n"] == 4
    assert len(res.latencies_ms["deep"]) == 8 and len(res.latencies_ms["fast"]) == 4
    assert res.units_per_message is None  # the fake reports no unit count; nothing is made up
    assert len(deleted) == 1 and deleted[0].startswith("/v1/users/bench-conv-x-")


def test_a_failed_job_fails_the_run_and_still_deletes_the_user() -> None:
    deleted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages"):
            return httpx.Response(202, json={"job_id": "j1", "accepted": 1, "duplicates": 0})
        if request.url.path.startswith("/v1/jobs/"):
            return httpx.Response(200, json={"id": "j1", "status": "failed", "error": "boom"})
        deleted.append(request.url.path)
        return httpx.Response(204)

    conv = parse_conversation(sample())
    res = Results()
    register_questions([conv], res)
    with httpx.Client(base_url="http://memsvc", transport=httpx.MockTransport(handler)) as http, \
            pytest.raises(BenchError, match="boom"):
        run_memsvc([conv], MemsvcClient(http), res)
    assert len(deleted) == 1
