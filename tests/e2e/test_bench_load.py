"""`memsvc bench load` end to end, small: 4 clients for 5 s against a locally started memsvc serve."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

MEMSVC = Path(sys.executable).parent / "memsvc"
ROUTES = {"ingest", "ingest_repeat", "ingest_wait", "search", "healthz", "job", "user"}


def test_bench_load_reports_latencies_and_loses_nothing(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("memsvc-bench-*"))
    out = tmp_path / "load.json"
    cmd = [str(MEMSVC), "bench", "load", "--clients", "4", "--duration", "5", "--json", str(out)]
    # A high repeat and wait share, so that even 5 s surely exercise dedup and wait=true.
    cmd += ["--retry-share", "0.3", "--wait-share", "0.3", "--drain-timeout", "300"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-2000:]
    report = json.loads(out.read_text())

    assert report["passed"] is True and report["5xx"] == 0
    assert report["requests"] > 20 and report["requests_per_s"] > 0
    assert set(report["routes"]) >= ROUTES, report["routes"].keys()
    for route in ("ingest", "search"):
        r = report["routes"][route]
        assert r["n"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["max_ms"]
    # Every repeat of an acknowledged batch was answered as all duplicates.
    assert report["routes"]["ingest_repeat"]["n"] > 0 and report["dedup_violations"] == []
    assert report["jobs"]["total"] > 0 and report["jobs"]["done"] == report["jobs"]["total"]
    m = report["messages"]
    assert m["acknowledged"] > 0 and m["stored"] == m["built"] == m["acknowledged"]
    assert m["lost"] == 0 and m["extra"] == 0
    assert "PASSED" in done.stdout and "| search |" in done.stdout
    assert set(Path(tempfile.gettempdir()).glob("memsvc-bench-*")) <= before  # the local server is gone
