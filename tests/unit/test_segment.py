"""Episode segmentation with the real bundled MiniLM on a talk that changes topic and pauses."""

from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from memsvc.embed import get_embedder
from memsvc.extract import Turn
from memsvc.segment import SegmentParams, segment

START = datetime(2024, 3, 9, 18, 0, tzinfo=UTC)
LINES = [
    # cooking: turns 0-6
    ("Priya", "I tried making homemade pasta dough tonight and it came out way too sticky."),
    ("Tom", "Did you knead the dough with extra flour? Pasta dough needs a lot of kneading."),
    ("Priya", "I kneaded it for ten minutes, but I think I used too many eggs for the flour."),
    ("Tom", "Try two eggs per cup of flour, and let the dough rest in the fridge for an hour."),
    ("Priya", "Good tip. I also want to make a tomato basil sauce to go with the fresh pasta."),
    ("Tom", "Simmer the tomatoes with garlic and olive oil, then add the basil at the very end."),
    ("Priya", "Thanks!"),
    # job hunt: turns 7-12
    ("Tom", "On another note, I had my second interview at the bank for the data analyst job today."),
    ("Priya", "How did the interview go? Did they ask you technical SQL questions?"),
    ("Tom", "They gave me a SQL test on joins and a case study about customer churn."),
    ("Priya", "That sounds tough. When will the hiring manager tell you about an offer?"),
    ("Tom", "The recruiter said they would send a job offer decision by Friday."),
    ("Priya", "Fingers crossed, I hope you get the analyst position at the bank."),
    # a trip, two hours later: turns 13-18
    ("Priya", "By the way, my sister and I booked flights to Lisbon for a week in April."),
    ("Tom", "Lisbon is lovely. Are you going to take the tram up to the castle in Alfama?"),
    ("Priya", "Yes, and we also want a day trip to Sintra to see the palaces."),
    ("Tom", "Take the early train to Sintra, the palace tours get crowded by noon."),
    ("Priya", "We rented a small apartment near the river for the whole week in Lisbon."),
    ("Tom", "Have a great trip to Portugal and try the custard tarts in Belem!"),
]


def turn_times(gap_at: int | None) -> list[datetime]:
    times, t = [], START
    for i in range(len(LINES)):
        if i == gap_at:
            t += timedelta(hours=2)
        times.append(t)
        t += timedelta(minutes=1)
    return times


def make_turns(gap_at: int | None = 13) -> list[Turn]:
    times = turn_times(gap_at)
    return [Turn(f"t{i}", s, "user", c, times[i]) for i, (s, c) in enumerate(LINES)]


@pytest.fixture(scope="module")
def vectors() -> npt.NDArray[np.float32]:
    return get_embedder().encode([c for _, c in LINES])


def test_boundaries_land_where_the_topic_changes(vectors: npt.NDArray[np.float32]) -> None:
    spans = segment(make_turns(gap_at=None), vectors)
    assert [(s.start, s.end) for s in spans] == [(0, 7), (7, 13), (13, 19)]
    assert "pasta" in spans[0].title and "bank" in spans[1].title and "Lisbon" in spans[2].title
    assert spans[0].summary.startswith(
        "Priya: Priya tried making homemade pasta dough tonight (9 March 2024)"
    )
    assert [s.closed for s in spans] == [True, True, False]


def test_time_gap_forces_a_boundary_even_mid_topic(vectors: npt.NDArray[np.float32]) -> None:
    spans = segment(make_turns(gap_at=3), vectors)
    assert 3 in [s.start for s in spans]
    assert spans[0].end == 3


def test_max_length_holds(vectors: npt.NDArray[np.float32]) -> None:
    params = SegmentParams(max_turns=4)
    spans = segment(make_turns(), vectors, params=params)
    assert max(s.end - s.start for s in spans) <= 4
    assert spans[0].start == 0 and spans[-1].end == len(LINES)
    assert all(a.end == b.start for a, b in zip(spans, spans[1:], strict=False))


def test_no_one_turn_episodes_without_a_hard_gap(vectors: npt.NDArray[np.float32]) -> None:
    spans = segment(make_turns(gap_at=None), vectors, params=SegmentParams(shift_ceiling=0.9, quantile=0.9))
    assert all(s.end - s.start >= 3 for s in spans[:-1])


def test_last_episode_closes_when_the_session_goes_idle(vectors: npt.NDArray[np.float32]) -> None:
    turns = make_turns()
    last = turns[-1].created_at
    assert not segment(turns, vectors, now=last + timedelta(minutes=5))[-1].closed
    assert segment(turns, vectors, now=last + timedelta(hours=1))[-1].closed


def test_deterministic_and_incrementally_stable(vectors: npt.NDArray[np.float32]) -> None:
    turns = make_turns()
    full = segment(turns, vectors)
    assert segment(turns, vectors.copy()) == full
    for k in range(1, len(turns) + 1):
        prefix = segment(turns[:k], vectors[:k])
        closed = [s for s in prefix if s.closed]
        assert closed == full[: len(closed)], f"prefix of {k} turns changed a closed episode"
        assert prefix[-1].start == full[len(prefix) - 1].start
