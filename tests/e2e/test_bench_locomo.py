"""`memsvc bench locomo` end to end: a hand-made two-session slice through a real, locally started memsvc."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

MEMSVC = Path(sys.executable).parent / "memsvc"

SYSTEMS = [f"memsvc-deep@B{b}" for b in (1000, 2000)] + ["memsvc-fast@B1000"] + [
    f"turn-{kind}@B{b}" for kind in ("bm25", "dense", "hybrid") for b in (500, 1000, 2000)
]
TOP_KEYS = {"recall", "search_p50_ms", "search_p95_ms", "ingest_messages_per_s", "encode_sentences_per_s",
            "units_per_message", "peak_rss_mb", "machine", "data", "convs", "n_questions"}


def slice_data() -> list[dict[str, Any]]:
    s1 = [
        ("Ana", "Hi Ben! How was your week?"),
        ("Ben", "Busy. I adopted a greyhound named Comet from the shelter on Saturday."),
        ("Ana", "That is wonderful, greyhounds are so gentle."),
        ("Ben", "He already sleeps on the sofa all day."),
        ("Ana", "I started pottery classes at the community studio."),
        ("Ben", "Nice, what did you make?"),
    ]
    s2 = [
        ("Ana", "I finished my first pottery piece, a blue vase."),
        ("Ben", "Comet ran his first race in the park today."),
        ("Ana", "Here it is!"),
        ("Ben", "Beautiful. See you soon."),
    ]
    session_1 = [{"speaker": sp, "dia_id": f"D1:{i}", "text": t} for i, (sp, t) in enumerate(s1, 1)]
    session_2 = [{"speaker": sp, "dia_id": f"D2:{i}", "text": t} for i, (sp, t) in enumerate(s2, 1)]
    session_2[2]["blip_caption"] = "a photo of a blue ceramic vase on a table"
    return [{
        "sample_id": "conv-t",
        "conversation": {
            "speaker_a": "Ana", "speaker_b": "Ben",
            "session_1_date_time": "1:56 pm on 8 May, 2023", "session_1": session_1,
            "session_2_date_time": "10:31 am on 13 June, 2023", "session_2": session_2,
        },
        "qa": [
            {"question": "What is the name of the greyhound Ben adopted?", "answer": "Comet",
             "evidence": ["D1:2"], "category": 4},
            {"question": "When did Ben adopt Comet?", "answer": "6 May 2023",
             "evidence": ["D:1:2"], "category": 2},
            {"question": "What did Ana make in her pottery classes?", "answer": "a blue vase",
             "evidence": ["D1:5; D2:01"], "category": 1},
            {"question": "What did Ben bake?", "adversarial_answer": "bread",
             "evidence": ["D1:4"], "category": 5},
            {"question": "Who won the race?", "answer": "Comet", "evidence": ["D9:9"], "category": 4},
        ],
    }]


def serve_available() -> bool:
    if not MEMSVC.exists():
        return False
    done = subprocess.run([str(MEMSVC), "serve", "--help"], capture_output=True, timeout=120)
    return done.returncode == 0


@pytest.mark.slow
def test_bench_locomo_against_a_local_memsvc(tmp_path: Path) -> None:
    if not serve_available():
        pytest.skip("`memsvc serve` is not available in this environment yet")
    data = tmp_path / "slice.json"
    data.write_text(json.dumps(slice_data()))
    out = tmp_path / "out" / "locomo.json"
    # The bench's data dir lives in the system temp dir (a pytest path is too long for PostgreSQL's
    # unix socket), so its removal is checked against a snapshot.
    before = set(Path(tempfile.gettempdir()).glob("memsvc-bench-*"))

    done = subprocess.run(
        [str(MEMSVC), "bench", "locomo", "--data", str(data), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    doc = json.loads(out.read_text())
    assert doc.keys() >= TOP_KEYS
    assert set(doc["recall"]) == set(SYSTEMS)
    assert doc["n_questions"] == 3  # the adversarial and the dangling-evidence question are not scored
    assert doc["convs"] == ["conv-t"]
    for system, row in doc["recall"].items():
        assert row["n"] == 3, system
        for column in ("all", "multi-hop", "temporal", "single-hop"):
            assert 0.0 <= row[column] <= 1.0, (system, column)
        assert row["open-domain"] is None  # no question of that category in the slice
    # The greyhound question names the very turn that answers it; ~130 tokens of conversation in all.
    assert doc["recall"]["memsvc-deep@B1000"]["single-hop"] == 1.0
    assert doc["recall"]["memsvc-fast@B1000"]["single-hop"] == 1.0
    assert doc["ingest_messages_per_s"] > 0 and doc["encode_sentences_per_s"] > 0
    assert doc["search_p50_ms"]["deep"] > 0 and doc["search_p95_ms"]["fast"] > 0
    assert doc["peak_rss_mb"]["bench"] > 0 and doc["peak_rss_mb"]["server"] > 0
    assert out.with_suffix(".md").read_text().count("| memsvc-") == 3
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The local server's data dir is gone (its processes with it: they ran from that dir).
    assert set(Path(tempfile.gettempdir()).glob("memsvc-bench-*")) <= before
