"""Note candidates: stable facts about people (home, job, pets, likes...) distilled from EDUs by rules."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from memsvc.extract import Edu


@dataclass(frozen=True)
class NoteCandidate:
    subject: str  # normalized person/entity name, e.g. "Caroline"
    attribute: str  # e.g. "lives_in", "works_as", "likes", "has_pet"
    value: str
    text: str  # rendered statement, e.g. "Caroline lives in Boston."
    confidence: float  # 0..1
    source_message_ids: tuple[str, ...]
    occurred_at: datetime | None
    is_correction: bool  # the statement carries an explicit correction cue


# A person has one of each at a time: a new different value replaces the old one. Everything else
# (likes, pets, plans, hobbies, identity) accumulates.
SINGLE_VALUED_ATTRIBUTES = frozenset(
    {"lives_in", "from", "works_as", "works_at", "relationship_status", "name", "age", "has_children"}
)

# Patterns are anchored at the subject, so "doesn't live in", "used to live in", "would love to live in"
# and questions never match: precision over coverage, a wrong note is worse than none.
_ADV = (
    r"(?:(?:really|also|just|still|now|currently|recently|finally|actually|totally|absolutely"
    r"|definitely)\s+)*"
)
_PLACE = r"(?P<v>[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+){0,3})"
_ROLE = r"(?:an?\s+)?(?P<v>[a-z][a-z-]+(?:\s+[a-z][a-z-]+){0,3}?)(?=\s+(?:at|for|in|since)\b|[.,!;]|$)"
_NOT_A_THING = r"(?!(?:it|that|this|those|these|them|him|her|how|what|when|where|you|everything|all)\b)"
_THING = _NOT_A_THING + (
    r"(?P<v>[a-z][a-z'-]*(?:\s+[a-z][a-z'-]*){0,3}?)(?=\s+(?:and|but|with|because|so|when)\b|[.,!;(]|$)"
)
_PETS = r"dog|dogs|cat|cats|puppy|kitten|hamster|rabbit|bunny|parrot|turtle|guinea pig|horse|snake|fish|bird"
_INSTRUMENTS = r"violin|guitar|piano|drums|cello|flute|saxophone|ukulele|bass|clarinet|trumpet|harp"
_COUNT = r"(?:\d+|one|two|three|four|five|six)"

# (attribute, pattern after the subject, confidence, rendering with {s} subject and {v} value)
_RULES: tuple[tuple[str, str, float, str], ...] = (
    ("lives_in", rf"(?:lives|live|is living|has been living) in {_PLACE}", 0.85, "{s} lives in {v}."),
    ("lives_in", rf"(?:moved|relocated|has moved|has relocated) to {_PLACE}", 0.8, "{s} lives in {v}."),
    ("from", rf"(?:is|comes|come) (?:originally )?from {_PLACE}", 0.75, "{s} is from {v}."),
    ("works_as", rf"(?:works|work|is working) as {_ROLE}", 0.8, "{s} works as {a} {v}."),
    ("works_as", rf"(?:got|landed|started|accepted) (?:a|an|the) (?:new )?job as {_ROLE}", 0.75,
     "{s} works as {a} {v}."),
    ("works_at", rf"(?:works|work|is working) (?:at|for) {_PLACE}", 0.8, "{s} works at {v}."),
    ("relationship_status", r"(?:is|got) (?P<v>married|engaged|divorced|single|widowed)\b", 0.8,
     "{s} is {v}."),
    ("identity", r"(?:is|identifies as|came out as) (?P<v>(?:an? )?(?:transgender|trans)(?: woman| man)?"
     r"|gay|lesbian|bisexual|queer|non-binary|nonbinary)\b", 0.8, "{s} is {v}."),
    ("has_pet", rf"(?:has|got|adopted) (?:an?|{_COUNT}) (?:new )?(?P<v>(?:{_PETS})(?: named [A-Z][a-z]+)?)\b",
     0.8, "{s} has {a} {v}."),
    ("has_children", rf"has (?P<v>{_COUNT} (?:kids|children|sons|daughters|kid|child|son|daughter))\b", 0.8,
     "{s} has {v}."),
    ("likes", r"(?:loves|love|likes|like|enjoys|enjoy|is passionate about|is into"
     rf"|is a (?:huge |big )?fan of) {_THING}", 0.6, "{s} likes {v}."),
    ("plans", r"(?:is planning to|plans to|is going to|intends to|is hoping to) (?P<v>[^.!?,;]{3,80})", 0.6,
     "{s} plans to {v}."),
    ("hobbies", rf"(?:plays|play|is learning|started learning|has been learning|learned)"
     rf" (?:to play )?(?:the )?(?P<v>{_INSTRUMENTS})\b", 0.7, "{s} plays the {v}."),
    ("studies", rf"(?:studies|is studying|majors in|is majoring in) {_THING}", 0.7, "{s} studies {v}."),
    ("age", r"(?:is|turned) (?P<v>\d{1,3}) years old\b", 0.8, "{s} is {v} years old."),
)  # fmt: skip
_NAME = re.compile(
    r"^(?P<s>[A-Z][A-Za-z-]+(?: [A-Z][A-Za-z-]+)?)'s name is (?P<v>[A-Z][a-z]+(?: [A-Z][a-z]+)?)\b"
)

_PREFIX = re.compile(r"^(?P<speaker>.+?) \(\d{1,2} [A-Z][a-z]+ \d{4}\): ")
_LEAD_IN = re.compile(
    r"^(?:(?:yeah|yes|yep|well|so|oh|actually|anyway|correction:|sorry|also|and|but|now|btw|by the way|"
    r"just so you know|to be clear|no)[,!:]?\s+)+",
    re.IGNORECASE,
)
_CORRECTION = re.compile(
    r"\b(?:actually|correction:|meant|to correct)\b|\bnot\s+[^,.;]+?,?\s+but\b|,\s+not\s+[A-Z]", re.IGNORECASE
)


def _statement(edu: Edu) -> tuple[str, str] | None:
    """The speaker and the resolved sentence of an EDU, without the question an answer quotes."""
    m = _PREFIX.match(edu.text)
    if m is None:
        return None
    body = edu.text[m.end() :].split(' (answering ', 1)[0].strip()
    return m.group("speaker"), body


def distill_notes(edus: Sequence[Edu]) -> list[NoteCandidate]:
    """Stable facts stated about a person named at the start of an EDU's sentence; facts a speaker states
    about someone else get 0.2 less confidence. Questions never yield notes. Same fact twice: one note."""
    found: dict[tuple[str, str, str], NoteCandidate] = {}
    for edu in edus:
        parts = _statement(edu)
        if parts is None:
            continue
        speaker, body = parts
        if body.endswith("?"):
            continue
        correction = bool(_CORRECTION.search(body))
        clause = _LEAD_IN.sub("", body)
        names = [speaker, *(e for e in edu.entities if e[:1].isupper() and e != speaker)]
        for note in _match(clause, names, speaker):
            note = replace(
                note,
                source_message_ids=edu.source_message_ids,
                occurred_at=edu.occurred_at,
                is_correction=correction,
            )
            key = (note.subject, note.attribute, note.value.casefold())
            seen = found.get(key)
            if seen is None:
                found[key] = note
            else:
                ids = tuple(dict.fromkeys([*seen.source_message_ids, *note.source_message_ids]))
                best = max(seen.confidence, note.confidence)
                found[key] = replace(seen, source_message_ids=ids, confidence=best)
    return list(found.values())


def _match(clause: str, names: Sequence[str], speaker: str) -> list[NoteCandidate]:
    out: list[NoteCandidate] = []
    name_match = _NAME.match(clause)
    if name_match and name_match.group("s") in names:
        subject, value = name_match.group("s"), name_match.group("v")
        out.append(_note(subject, "name", value, f"{subject}'s name is {value}.", 0.9, subject == speaker))
    for subject in names:
        if not clause.startswith(subject + " "):
            continue
        rest = clause[len(subject) + 1 :]
        for attribute, pattern, confidence, template in _RULES:
            m = re.match(_ADV + pattern, rest)
            if m is None:
                continue
            value = m.group("v").strip()
            article = "an" if value[:1].lower() in "aeiou" else "a"
            text = template.format(s=subject, v=value, a=article)
            out.append(_note(subject, attribute, value, text, confidence, subject == speaker))
    return out


def _note(subject: str, attribute: str, value: str, text: str, confidence: float, own: bool) -> NoteCandidate:
    return NoteCandidate(
        subject=subject,
        attribute=attribute,
        value=value,
        text=text,
        confidence=round(confidence if own else confidence - 0.2, 2),
        source_message_ids=(),
        occurred_at=None,
        is_correction=False,
    )


def conflicts(old: NoteCandidate, new: NoteCandidate) -> bool:
    """True when `new` should supersede `old`: same subject and attribute with a different value, where
    the attribute holds one value at a time or `new` is an explicit correction."""
    if old.subject.casefold() != new.subject.casefold() or old.attribute != new.attribute:
        return False
    if old.value.casefold().strip() == new.value.casefold().strip():
        return False
    return old.attribute in SINGLE_VALUED_ATTRIBUTES or new.is_correction
