"""RulesExtractor on hand-written conversations: exact EDU texts, sources, dates, names, small talk."""

from datetime import UTC, date, datetime

import pytest

from memsvc.extract import Edu, RulesExtractor, Turn, split_sentences
from memsvc.temporal import find_time_cues, query_periods

MONDAY = datetime(2023, 5, 8, 14, 30, tzinfo=UTC)  # 8 May 2023 was a Monday
PEOPLE = ["Priya", "Jonathan"]
LINES = [
    ("Jonathan", "Hi Priya! Good to see you!"),
    ("Priya", "Hey Jon! I went to a pottery class yesterday and I made my first bowl."),
    ("Jonathan", "That's awesome! Have you been to the studio before?"),
    ("Priya", "Yes, twice!"),
    ("Jonathan", "I started a new job at Orbit Labs last week. "
     "We're moving the office to Denver next month."),
    ("Priya", "Congrats! Your team is lucky. Since we last talked, my sister visited from Lima two days ago."
     " [shares an image: a photo of two women hiking on a mountain trail]"),
    ("Jonathan", "Thanks!"),
    ("Priya", "I'm hoping to visit Peru this summer; I haven't seen my grandmother since last year."),
]  # fmt: skip


def extract(lines: list[tuple[str, str]] = LINES, when: datetime = MONDAY) -> list[Edu]:
    turns = [Turn(f"c1:{i + 1}", s, "user", c, when) for i, (s, c) in enumerate(lines)]
    return RulesExtractor().extract(turns, PEOPLE)


def test_exact_edus_for_a_conversation() -> None:
    assert [(e.text, e.source_message_ids) for e in extract()] == [
        ("Priya (8 May 2023): Priya went to a pottery class yesterday (7 May 2023) and Priya made Priya's "
         "first bowl.", ("c1:2",)),
        ("Jonathan (8 May 2023): Has Priya been to the studio before?", ("c1:3",)),
        ('Priya (8 May 2023): Yes, twice! (answering Jonathan: "Has Priya been to the studio before?")',
         ("c1:4", "c1:3")),
        ("Jonathan (8 May 2023): Jonathan started a new job at Orbit Labs last week "
         "(the week of 1 May 2023).", ("c1:5",)),
        ("Jonathan (8 May 2023): We're moving the office to Denver next month (June 2023).", ("c1:5",)),
        ("Priya (8 May 2023): Jonathan's team is lucky.", ("c1:6",)),
        ("Priya (8 May 2023): Since Priya and Jonathan last talked, Priya's sister visited from Lima "
         "two days ago (6 May 2023).", ("c1:6",)),
        ("Priya (8 May 2023): Priya shared an image: a photo of two women hiking on a mountain trail",
         ("c1:6",)),
        ("Priya (8 May 2023): Priya is hoping to visit Peru this summer (summer 2023).", ("c1:8",)),
        ("Priya (8 May 2023): Priya hasn't seen Priya's grandmother since last year (2022).", ("c1:8",)),
    ]  # fmt: skip


def test_dates_cues_and_speakers() -> None:
    edus = {e.text.split("): ", 1)[1][:30]: e for e in extract()}
    pottery = edus["Priya went to a pottery class "]
    assert (pottery.occurred_at, pottery.time_cue) == (datetime(2023, 5, 7, tzinfo=UTC), "yesterday")
    job = edus["Jonathan started a new job at "]
    assert (job.occurred_at, job.time_cue) == (datetime(2023, 5, 1, tzinfo=UTC), "last week")
    move = edus["We're moving the office to Den"]
    assert (move.occurred_at, move.time_cue) == (datetime(2023, 6, 1, tzinfo=UTC), "next month")
    team = edus["Jonathan's team is lucky."]
    assert (team.occurred_at, team.time_cue, team.speakers) == (MONDAY, None, ("Priya",))
    answer = edus["Yes, twice! (answering Jonatha"]
    assert answer.speakers == ("Priya", "Jonathan")


def test_entities_are_normalized() -> None:
    edus = extract([("Priya", "Jon told me about Orbit Labs and their rocket engines.")])
    assert edus[0].text == (
        "Priya (8 May 2023): Jonathan told Priya about Orbit Labs and their rocket engines."
    )
    assert edus[0].entities == ("Jonathan", "Priya", "Orbit Labs", "rocket engine")
    job = extract()[3]
    assert job.entities == ("Jonathan", "Orbit Labs", "job")


def test_small_talk_is_skipped_and_facts_kept() -> None:
    edus = extract()
    covered = {i for e in edus for i in e.source_message_ids}
    assert "c1:1" not in covered  # "Hi Priya! Good to see you!"
    assert "c1:7" not in covered  # "Thanks!"
    assert not any(e.text.endswith(("Congrats!", "That's awesome!")) for e in edus)
    assert {"c1:2", "c1:4", "c1:5", "c1:6", "c1:8"} <= covered


def test_image_caption_is_its_own_edu() -> None:
    edus = extract(
        [("Jonathan", "Look what I found! [shares an image: a red vintage bicycle leaning on a fence]")]
    )
    caption = [e for e in edus if "shared an image" in e.text]
    assert [e.text for e in caption] == [
        "Jonathan (8 May 2023): Jonathan shared an image: a red vintage bicycle leaning on a fence"
    ]
    assert "red vintage bicycle" in caption[0].entities


def test_you_resolves_to_the_addressee_in_a_single_turn_batch() -> None:
    edus = extract([("Jonathan", "You are the best baker I know and your sourdough is perfect.")])
    assert edus[0].text == (
        "Jonathan (8 May 2023): Priya is the best baker Jonathan knows and Priya's sourdough is perfect."
    )


def test_short_statement_is_not_merged_with_the_question() -> None:
    edus = extract([("Jonathan", "Do you like hiking?"), ("Priya", "I'm a marathon runner.")])
    assert edus[-1].text == "Priya (8 May 2023): Priya is a marathon runner."
    assert edus[-1].source_message_ids == ("c1:2",)


@pytest.mark.parametrize(
    ("cue", "said", "label", "day"),
    [
        ("yesterday", date(2023, 5, 8), "7 May 2023", date(2023, 5, 7)),
        ("last night", date(2023, 3, 1), "28 February 2023", date(2023, 2, 28)),
        ("last week", date(2023, 5, 8), "the week of 1 May 2023", date(2023, 5, 1)),
        ("last weekend", date(2023, 5, 8), "the weekend of 6 May 2023", date(2023, 5, 6)),
        ("last weekend", date(2023, 5, 13), "the weekend of 6 May 2023", date(2023, 5, 6)),
        ("next month", date(2023, 12, 20), "January 2024", date(2024, 1, 1)),
        ("two days ago", date(2023, 5, 1), "29 April 2023", date(2023, 4, 29)),
        ("a couple of weeks ago", date(2023, 5, 10), "the week of 24 April 2023", date(2023, 4, 24)),
        ("3 months ago", date(2023, 2, 15), "November 2022", date(2022, 11, 1)),
        ("last Friday", date(2023, 5, 8), "5 May 2023", date(2023, 5, 5)),
        ("last Friday", date(2023, 5, 12), "5 May 2023", date(2023, 5, 5)),
        ("next Tuesday", date(2023, 5, 8), "9 May 2023", date(2023, 5, 9)),
        ("last year", date(2023, 5, 8), "2022", date(2022, 1, 1)),
        ("this summer", date(2023, 5, 8), "summer 2023", date(2023, 6, 1)),
        ("last summer", date(2023, 5, 8), "summer 2022", date(2022, 6, 1)),
        ("last summer", date(2023, 10, 2), "summer 2023", date(2023, 6, 1)),
        ("this winter", date(2024, 1, 10), "winter 2023-2024", date(2023, 12, 1)),
    ],
)
def test_time_cues(cue: str, said: date, label: str, day: date) -> None:
    (found,) = find_time_cues(f"We did it {cue}, really.", said)
    assert (found.cue, found.label, found.day) == (cue, label, day)


def test_sentence_splitting_keeps_abbreviations() -> None:
    assert split_sentences("I met Dr. Smith at 5 p.m. today. It went well!") == [
        "I met Dr. Smith at 5 p.m. today.",
        "It went well!",
    ]


def test_deterministic() -> None:
    assert extract() == extract()


@pytest.mark.parametrize(
    ("query", "asked", "periods"),
    [
        ("What did Mel paint in July 2023?", None, [(date(2023, 7, 1), date(2023, 8, 1))]),
        ("What did she show on October 13, 2023?", None, [(date(2023, 10, 13), date(2023, 10, 14))]),
        ("What did Gina find on 1 February, 2023?", None, [(date(2023, 2, 1), date(2023, 2, 2))]),
        ("How often at the beach in 2023?", None, [(date(2023, 1, 1), date(2024, 1, 1))]),
        ("What about February 30, 2023?", None, []),
        ("Where did I hike last summer?", None, []),  # relative: nothing without the question's day
        ("Where did I hike last summer?", date(2023, 11, 15), [(date(2023, 6, 1), date(2023, 9, 1))]),
        ("What did I do last weekend?", date(2023, 11, 15), [(date(2023, 11, 11), date(2023, 11, 13))]),
        ("What did I do two weeks ago?", date(2023, 11, 15), [(date(2023, 10, 30), date(2023, 11, 6))]),
        ("Who called yesterday?", date(2023, 3, 1), [(date(2023, 2, 28), date(2023, 3, 1))]),
    ],
)
def test_query_periods(query: str, asked: date | None, periods: list[tuple[date, date]]) -> None:
    dated, found = query_periods(query, asked)
    assert [(p.start, p.until) for p in found] == periods
    assert (dated != query) == (asked is not None and bool(periods))  # relative cues get their date
