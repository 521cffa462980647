"""`memsvc bench scale` end to end at a tiny size: real PostgreSQL, real embedder, a real local memsvc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

MEMSVC = Path(sys.executable).parent / "memsvc"

RUN_KEYS = {
    "config", "units", "users", "user_units", "insert_units_per_s", "insert_sample_units", "copy_units_per_s",
    "index_build_units_per_s", "index_save_s", "server_start_s", "search_fast_p50_ms", "search_fast_p95_ms",
    "search_deep_p50_ms", "search_deep_p95_ms", "embed_p50_ms", "embed_p95_ms",
    "faiss_p50_ms", "faiss_p95_ms",
    "overhead_ratio", "overhead_ratio_deep", "index_type", "approx_recall_at_10", "peak_rss_server_mb",
    "peak_rss_bench_mb", "load_avg_1m", "wall_s",
}
POSITIVE = RUN_KEYS - {"config", "index_type", "approx_recall_at_10", "index_save_s", "load_avg_1m"}


@pytest.fixture(scope="module")
def result() -> dict[str, object]:
    out_dir = Path(tempfile.mkdtemp(prefix="scale-"))
    out = out_dir / "scale.json"
    cmd = [str(MEMSVC), "bench", "scale", "--units", "2000", "--users", "20", "--queries", "20",
           "--pool", "150", "--insert-sample", "1000", "--json", str(out)]
    if os.environ.get("MEMSVC_TEST_DATABASE_URL"):
        cmd += ["--database-url", os.environ["MEMSVC_TEST_DATABASE_URL"]]
    env = {k: v for k, v in os.environ.items() if k != "MEMSVC_DATABASE_URL"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    doc: dict[str, object] = json.loads(out.read_text())
    doc["_md"] = out.with_suffix(".md").read_text()
    doc["_png_bytes"] = out.with_suffix(".png").stat().st_size
    return doc


def test_both_configurations_report_every_measure(result: dict[str, object]) -> None:
    runs = result["runs"]
    assert isinstance(runs, list) and [r["config"] for r in runs] == ["single-user", "many-users"]
    for run in runs:
        assert set(run) == RUN_KEYS
        assert run["units"] == 2000
        assert all(isinstance(run[k], int | float) and run[k] > 0 for k in POSITIVE), run
        assert run["index_type"] == "Flat" and run["approx_recall_at_10"] is None  # 2000 < the threshold
    single, many = runs
    assert (single["users"], single["user_units"]) == (1, 2000)
    assert (many["users"], many["user_units"]) == (20, 100)


def test_overhead_ratio_is_memsvc_p95_over_the_raw_costs(result: dict[str, object]) -> None:
    for run in result["runs"]:  # type: ignore[attr-defined]  # a list, checked above
        raw = run["embed_p95_ms"] + run["faiss_p95_ms"]
        assert run["overhead_ratio"] == pytest.approx(run["search_fast_p95_ms"] / raw, rel=1e-2)
        assert run["overhead_ratio_deep"] == pytest.approx(run["search_deep_p95_ms"] / raw, rel=1e-2)


def test_markdown_table_and_plot_are_written(result: dict[str, object]) -> None:
    md = str(result["_md"])
    assert "| single-user | 2000 | 1 | Flat |" in md and "| many-users | 2000 | 20 | Flat |" in md
    assert int(result["_png_bytes"]) > 10_000  # type: ignore[call-overload]  # an int, set above
    assert result["skipped"] == []
