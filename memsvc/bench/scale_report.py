"""`memsvc bench scale` outputs: the Markdown table and the latency-vs-size plot of its JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLUMNS = (("config", "config"), ("units", "units"), ("users", "users"), ("index", "index_type"),
           ("insert u/s", "insert_units_per_s"), ("COPY u/s", "copy_units_per_s"),
           ("build u/s", "index_build_units_per_s"),
           ("fast p50", "search_fast_p50_ms"), ("fast p95", "search_fast_p95_ms"),
           ("deep p50", "search_deep_p50_ms"), ("deep p95", "search_deep_p95_ms"),
           ("embed p95", "embed_p95_ms"), ("faiss p95", "faiss_p95_ms"), ("ratio", "overhead_ratio"),
           ("recall@10", "approx_recall_at_10"), ("server RSS MB", "peak_rss_server_mb"),
           ("load", "load_avg_1m"))


def markdown(doc: dict[str, Any]) -> str:
    lines = [f"# memsvc scale bench\n\n`{doc['command']}` on {doc['machine']['cpu']} "
             f"({doc['machine']['cores']} cores, embed on {doc['machine']['embed_device']}). "
             "Latencies in ms; "
             "ratio = memsvc fast p95 / (embed p95 + faiss p95); recall@10 of the approximate index vs "
             "exact, empty where the searched user's index is flat. insert u/s: store.insert_units on "
             f"the first {doc['insert_sample']} units of a run; COPY u/s: the bench's bulk COPY of the rest. "
             "load: 1-minute load average when the run started (other work shares these cores)."
             f"\n\n{doc['vectors']}\n",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in doc["runs"]:
        lines.append("| " + " | ".join("-" if r[k] is None else str(r[k]) for _, k in COLUMNS) + " |")
    if doc["skipped"]:
        skipped = ", ".join(doc["skipped"])
        lines.append(f"\nNot run (time budget of {doc['max_minutes']} min spent): {skipped}")
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; set before pyplot is imported
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for config, style in (("single-user", "-"), ("many-users", ":")):
        runs = sorted((r for r in doc["runs"] if r["config"] == config), key=lambda r: r["units"])
        if not runs:
            continue
        xs = [r["units"] for r in runs]
        for label, ys in (("memsvc fast p95", [r["search_fast_p95_ms"] for r in runs]),
                          ("memsvc deep p95", [r["search_deep_p95_ms"] for r in runs]),
                          ("embed+faiss p95", [r["embed_p95_ms"] + r["faiss_p95_ms"] for r in runs]),
                          ("faiss p95", [r["faiss_p95_ms"] for r in runs])):
            ax.plot(xs, ys, style, marker="o", label=f"{label} ({config})")
    ax.axhline(100, color="grey", linewidth=0.8, label="100 ms target")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("memory units in the database")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("search latency vs size (client-side p95)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
