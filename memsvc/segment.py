"""Episodes: event segmentation of a session's turns (topic shift | surprise | time gap | length caps)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from memsvc.extract import RulesExtractor, Turn, entities_of, is_small_talk, split_caption, split_sentences


@dataclass(frozen=True)
class EpisodeSpan:
    start: int  # turn indices [start, end)
    end: int
    title: str  # short, extractive: the episode's most repeated keywords
    summary: str  # 1-3 key sentences, speakers named
    closed: bool  # False if the episode may still grow


@dataclass(frozen=True)
class SegmentParams:
    """Every threshold of the segmenter. Similarities are MiniLM-L6 cosines of whole turns: turns on one
    topic sit around 0.3-0.6, unrelated turns around 0.0-0.2 (measured on LoCoMo and the tests' talks)."""

    # Topic channel: adjacent similarity below the `quantile` of the last `window` adjacent similarities.
    # 16 turns is about one or two episodes of history, so the quantile follows the speakers' style.
    window: int = 16
    quantile: float = 0.25
    # Until this many similarities are seen the quantile is noise; only `shift_floor` applies.
    min_history: int = 4
    # A drop counts only when the pair is also weakly related in absolute terms: without this, a talk
    # that stays on one topic would still be cut at its lowest quartile.
    shift_ceiling: float = 0.30
    # Below this an adjacent pair is unrelated whatever the history says.
    shift_floor: float = 0.05
    # The new turn must also be far from the episode as a whole, so one odd reply does not cut a topic.
    centroid_ceiling: float = 0.35
    # Surprise channel: a turn this far (1 - cosine) from the running episode centroid opens an episode
    # even when its neighbour happened to be similar.
    surprise_distance: float = 0.85
    # People who pause half an hour have usually moved on (and the worker sees it as a new burst).
    gap: timedelta = timedelta(minutes=30)
    # ~12 turns is 6 exchanges: long enough for one event, short enough to stay one retrievable unit.
    max_turns: int = 12
    # A 1-2 turn episode is mostly a reply that drifted; such turns stay with the episode before them.
    min_turns: int = 3
    # "Thanks!" or "Haha, same" never opens a topic, however dissimilar its vector is.
    min_words_to_open: int = 4
    # The last episode is closed once the session has been idle this long (the next turn opens a new one).
    idle_close: timedelta = timedelta(minutes=30)
    title_keywords: int = 3


def _quantile(values: Sequence[float], q: float) -> float:
    # numpy's default linear interpolation, spelled out so results never depend on a numpy version.
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def boundaries(
    turns: Sequence[Turn], vectors: npt.NDArray[np.float32], params: SegmentParams = SegmentParams()
) -> list[int]:
    """Start indices of the episodes. Each decision looks only at turns up to the one decided, so a
    longer prefix of the same session never moves an earlier boundary."""
    if len(turns) == 0:
        return []
    starts = [0]
    recent: deque[float] = deque(maxlen=params.window)
    total = vectors[0].astype(np.float64).copy()
    for i in range(1, len(turns)):
        vec = vectors[i].astype(np.float64)
        adjacent = float(vectors[i - 1].astype(np.float64) @ vec)
        length = i - starts[-1]
        centroid = total / (np.linalg.norm(total) or 1.0)
        to_episode = float(centroid @ vec)
        hard = turns[i].created_at - turns[i - 1].created_at > params.gap or length >= params.max_turns
        can_open = length >= params.min_turns and len(turns[i].content.split()) >= params.min_words_to_open
        shifted = adjacent < params.shift_floor
        if len(recent) >= params.min_history:
            threshold = min(_quantile(list(recent), params.quantile), params.shift_ceiling)
            shifted = shifted or adjacent < threshold
        shifted = shifted and to_episode < params.centroid_ceiling
        surprised = 1.0 - to_episode > params.surprise_distance
        recent.append(adjacent)
        if hard or (can_open and (shifted or surprised)):
            starts.append(i)
            total = vec.copy()
        else:
            total += vec
    return starts


def segment(
    turns: Sequence[Turn],
    vectors: npt.NDArray[np.float32],
    *,
    now: datetime | None = None,
    params: SegmentParams = SegmentParams(),
) -> list[EpisodeSpan]:
    """Episodes of one session, in order. All but the last are closed; the last is closed when it is
    full or when `now` is more than `params.idle_close` after its last turn (None: it stays open)."""
    if len(turns) != len(vectors):
        raise ValueError(f"{len(turns)} turns but {len(vectors)} vectors")
    starts = boundaries(turns, vectors, params)
    spans: list[EpisodeSpan] = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(turns)
        last = k + 1 == len(starts)
        idle = now is not None and now - turns[end - 1].created_at > params.idle_close
        closed = not last or end - start >= params.max_turns or idle
        speakers = list(dict.fromkeys(t.speaker for t in turns[:end]))
        episode = turns[start:end]
        spans.append(
            EpisodeSpan(
                start=start,
                end=end,
                title=title(episode, speakers, params.title_keywords),
                summary=summary(episode, vectors[start:end], speakers),
                closed=closed,
            )
        )
    return spans


def title(turns: Sequence[Turn], speakers: Sequence[str], size: int = 3) -> str:
    """The episode's most repeated keywords and names (first mention breaks ties), speakers left out."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for turn in turns:
        body, caption = split_caption(turn.content)
        for entity in entities_of(f"{body} {caption or ''}", speakers, set()):
            if entity not in speakers:
                counts[entity] += 1
                first.setdefault(entity, len(first))
    best = sorted(counts, key=lambda e: (-counts[e], first[e]))[:size]
    return ", ".join(best) if best else "small talk"


def summary(turns: Sequence[Turn], vectors: npt.NDArray[np.float32], speakers: Sequence[str]) -> str:
    """1-3 sentences: from the turns nearest the episode centroid, their most specific resolved statement."""
    centroid = vectors.astype(np.float64).sum(axis=0)
    scores = vectors.astype(np.float64) @ centroid
    wanted = 1 + (len(turns) > 4) + (len(turns) > 8)
    factual = [
        i for i in range(len(turns))
        if any(not is_small_talk(s, speakers) for s in split_sentences(split_caption(turns[i].content)[0]))
    ]  # fmt: skip
    chosen = sorted(sorted(factual, key=lambda i: (-scores[i], i))[:wanted])
    extractor = RulesExtractor()
    lines = []
    for i in chosen:
        edus = extractor.extract([turns[i]], speakers)
        if edus:  # the statement naming the most things is the turn's gist, not its greeting
            best = max(edus, key=lambda e: (len(e.entities), -edus.index(e)))
            lines.append(f"{turns[i].speaker}: {best.text.split('): ', 1)[1]}")
    return " ".join(lines)
