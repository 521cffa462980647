"""The bench's outputs: the JSON document, its Markdown table and the recall-vs-budget plot."""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from memsvc.bench.locomo import CATEGORIES

if TYPE_CHECKING:
    from memsvc.bench.runner import Results

COLUMNS = ("all", *CATEGORIES.values())


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(embed_device: str) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "embed_device": embed_device,
    }


def document(
    res: Results, data: str, convs: list[str], bench_rss_mb: float, server: str | None
) -> dict[str, Any]:
    modes = ("fast", "deep")
    server_rss = res.server_peak_rss_mb
    return {
        "recall": res.recall_table(),
        "search_p50_ms": {m: percentile(res.latencies_ms[m], 50) for m in modes},
        "search_p95_ms": {m: percentile(res.latencies_ms[m], 95) for m in modes},
        "ingest_messages_per_s": res.ingest_messages_per_s,
        "encode_sentences_per_s": res.encode_sentences_per_s,
        "units_per_message": res.units_per_message,
        "encoded_per_message": res.encoded_per_message,
        "encode_units_per_s": res.encode_units_per_s,
        "ingest_units_per_s": (
            None
            if res.ingest_messages_per_s is None or res.encoded_per_message is None
            else res.ingest_messages_per_s * res.encoded_per_message
        ),
        "peak_rss_mb": {"bench": round(bench_rss_mb, 1),
                        "server": None if server_rss is None else round(server_rss, 1)},
        "machine": machine(res.embed_device),
        "server": server,
        "data": data,
        "convs": convs,
        "n_questions": len(res.per_question),
        "per_question": res.per_question,
    }


def _fmt(x: object, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def markdown(doc: dict[str, Any]) -> str:
    recall: dict[str, dict[str, Any]] = doc["recall"]
    lines = [
        f"LoCoMo evidence recall, categories 1-4 ({', '.join(doc['convs'])}; {doc['n_questions']} questions; "
        "words x 1.33 tokens, each hit credits its first 3 sources)",
        "",
        "| system | " + " | ".join(COLUMNS) + " | n |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for system in sorted(recall, key=_system_order):
        row = recall[system]
        lines.append(f"| {system} | " + " | ".join(_fmt(row[c]) for c in COLUMNS) + f" | {row['n']} |")
    rss = doc["peak_rss_mb"]
    lines += [
        "",
        f"- search latency p50/p95 ms: fast {_fmt(doc['search_p50_ms']['fast'], 1)}/"
        f"{_fmt(doc['search_p95_ms']['fast'], 1)}, deep {_fmt(doc['search_p50_ms']['deep'], 1)}/"
        f"{_fmt(doc['search_p95_ms']['deep'], 1)}",
        f"- ingest: {_fmt(doc['ingest_messages_per_s'], 1)} messages/s end to end; "
        f"raw encode: {_fmt(doc['encode_sentences_per_s'], 0)} sentences/s",
        f"- memory units per message: {_fmt(doc['units_per_message'], 2)} searchable "
        f"({_fmt(doc['encoded_per_message'], 2)} embedded, entities included); ingest embeds "
        f"{_fmt(doc['ingest_units_per_s'], 0)} units/s end to end against a raw encode of "
        f"{_fmt(doc['encode_units_per_s'], 0)} units/s of the same kinds of text",
        f"- peak RSS MB: bench {_fmt(rss['bench'], 0)}, server tree {_fmt(rss['server'], 0)} "
        "(sum over serve, its workers and its PostgreSQL; shared pages count once per process)",
        f"- machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores, "
        f"Python {doc['machine']['python']}, embedder on {doc['machine']['embed_device']}",
    ]
    return "\n".join(lines) + "\n"


def _system_order(system: str) -> tuple[int, str, int]:
    family, _, budget = system.partition("@B")
    return (0 if family.startswith("memsvc") else 1, family, int(budget) if budget.isdigit() else 0)


def _series(recall: dict[str, dict[str, Any]], column: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per system family, (budgets, recalls) sorted by budget, empty categories left out."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for system, row in recall.items():
        m = re.fullmatch(r"(.+)@B(\d+)", system)
        if m is None or row.get(column) is None:
            continue
        xs, ys = out.setdefault(m.group(1), ([], []))
        xs.append(int(m.group(2)))
        ys.append(float(row[column]))
    return {k: (sorted(xs), [y for _, y in sorted(zip(xs, ys, strict=True))]) for k, (xs, ys) in out.items()}


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; set before pyplot is imported
    import matplotlib.pyplot as plt

    recall: dict[str, dict[str, Any]] = doc["recall"]
    # 2 x 3: "all" and the four categories, the sixth cell holds the legend.
    fig, grid = plt.subplots(2, 3, figsize=(12, 7.5), sharey=True)
    axes = list(grid.flat)
    for ax, column in zip(axes, COLUMNS, strict=False):
        for family, (xs, ys) in sorted(_series(recall, column).items()):
            memsvc = family.startswith("memsvc")
            ax.plot(xs, ys, marker="o" if memsvc else ".", linewidth=2.5 if memsvc else 1.2,
                    linestyle="-" if memsvc else "--", label=family)
        n = sum(1 for q in doc["per_question"] if column == "all" or q["category"] == column)
        ax.set_title(f"{column} (n={n})")
        ax.set_xlabel("token budget")
        ax.set_xscale("log", base=2)
        ax.set_xticks([500, 1000, 2000], labels=["500", "1000", "2000"])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.set_ylabel("evidence recall")
    legend_ax = axes[-1]
    handles, labels = axes[0].get_legend_handles_labels()
    legend_ax.legend(handles, labels, loc="center")
    legend_ax.axis("off")
    fig.suptitle(f"LoCoMo recall vs token budget ({', '.join(doc['convs'])})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(doc: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    plot(doc, out.with_suffix(".png"))
