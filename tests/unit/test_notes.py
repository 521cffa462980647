"""Note candidates distilled from rules-extracted EDUs; correction cues and conflicts."""

from datetime import UTC, datetime

from memsvc.extract import Edu, RulesExtractor, Turn
from memsvc.notes import SINGLE_VALUED_ATTRIBUTES, conflicts, distill_notes

SAID = datetime(2023, 5, 8, 12, 0, tzinfo=UTC)


def edus(*lines: tuple[str, str]) -> list[Edu]:
    turns = [Turn(f"n{i}", s, "user", c, SAID) for i, (s, c) in enumerate(lines)]
    return RulesExtractor().extract(turns, ["Caroline", "Melanie"])


def facts(*lines: tuple[str, str]) -> set[tuple[str, str, str]]:
    return {(n.subject, n.attribute, n.value) for n in distill_notes(edus(*lines))}


def test_moved_to_boston_last_month() -> None:
    (note,) = distill_notes(edus(("Caroline", "I moved to Boston last month and I love it.")))
    assert (note.subject, note.attribute, note.value) == ("Caroline", "lives_in", "Boston")
    assert note.text == "Caroline lives in Boston."
    assert note.occurred_at == datetime(2023, 4, 1, tzinfo=UTC)
    assert note.source_message_ids == ("n0",)
    assert not note.is_correction


def test_profile_facts() -> None:
    assert facts(
        ("Melanie", "I work as a nurse at Mercy Hospital."),
        ("Melanie", "I have two kids."),
        ("Caroline", "I'm a transgender woman."),
        ("Melanie", "I love painting and hiking."),
        ("Caroline", "I got a puppy named Oscar!"),
        ("Caroline", "I'm planning to adopt a kid next year."),
    ) == {
        ("Melanie", "works_as", "nurse"),
        ("Melanie", "has_children", "two kids"),
        ("Caroline", "identity", "a transgender woman"),
        ("Melanie", "likes", "painting"),
        ("Caroline", "has_pet", "puppy named Oscar"),
        ("Caroline", "plans", "adopt a kid next year (2024)"),
    }


def test_no_note_from_negations_questions_or_hypotheticals() -> None:
    assert facts(
        ("Caroline", "I don't live in Denver anymore."),
        ("Melanie", "Do you live in Denver?"),
        ("Caroline", "I would love to live in Paris someday."),
        ("Melanie", "I used to work as a teacher."),
        ("Caroline", "I love that!"),
    ) == set()


def test_correction_is_detected_and_conflicts() -> None:
    old, new = distill_notes(
        edus(
            ("Caroline", "I moved to Boston last month."),
            ("Caroline", "Actually, I live in Cambridge, not Boston."),
        )
    )
    assert (new.attribute, new.value, new.is_correction) == ("lives_in", "Cambridge", True)
    assert conflicts(old, new)


def test_conflicts_rules() -> None:
    notes = {n.value: n for n in distill_notes(edus(
        ("Melanie", "I live in Austin."), ("Melanie", "I live in Dallas."), ("Caroline", "I live in Austin."),
        ("Melanie", "I love jazz."), ("Melanie", "I love pottery."),
    )) if n.subject == "Melanie"}  # fmt: skip
    assert conflicts(notes["Austin"], notes["Dallas"])  # single-valued, different value
    assert not conflicts(notes["jazz"], notes["pottery"])  # likes accumulate
    caroline = next(n for n in distill_notes(edus(("Caroline", "I live in Austin."))))
    assert not conflicts(notes["Austin"], caroline)  # another person
    assert not conflicts(notes["Austin"], notes["Austin"])
    assert {"lives_in", "works_as", "relationship_status", "name"} <= SINGLE_VALUED_ATTRIBUTES
    assert "likes" not in SINGLE_VALUED_ATTRIBUTES


def test_a_correction_overrides_a_multi_valued_note() -> None:
    old, new = distill_notes(edus(("Melanie", "I love coffee."), ("Melanie", "Actually, I love tea.")))
    assert new.is_correction and conflicts(old, new)
