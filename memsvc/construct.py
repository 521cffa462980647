"""Memory construction: turns one ingest job's messages into embedded, linked memory units.

Per job: message units; EDUs from the extractor; entities (merged with the user's known ones);
episodes by segmenting the whole session again (closed episodes come out the same, the open one
grows); notes distilled from the EDUs, strengthening or superseding the user's existing notes.
Everything is written in one transaction, keyed so that running a job twice adds nothing.
"""

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from memsvc import store
from memsvc.db import transaction
from memsvc.embed import Embedder, content_hash
from memsvc.extract import Edu, Extractor, Turn
from memsvc.notes import SINGLE_VALUED_ATTRIBUTES, NoteCandidate, distill_notes
from memsvc.segment import EpisodeSpan, segment
from memsvc.tables import MemoryUnit, Message
from memsvc.temporal import format_day

log = logging.getLogger(__name__)

# EMem's threshold for treating two entity names as one (cosine of their embeddings); names of
# two or fewer letters and digits are never merged by similarity: too little to go on.
ENTITY_MERGE_COSINE = 0.9
ENTITY_MIN_CHARS = 3


@dataclass(frozen=True)
class BuildReport:
    job_id: str
    messages: int
    units: int  # new units of every kind
    encoded: int  # texts that went through the model (the rest reused a stored vector)
    extractor: str


def _key(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()


def _turn(msg: Message) -> Turn:
    return Turn(msg.external_id, msg.speaker, msg.role, msg.content, msg.created_at)


def _unit(
    user_id: int, session_id: int | None, kind: str, key: str, text: str, sources: list[str],
    occurred_at: datetime | None, **attrs: object,
) -> store.NewUnit:  # fmt: skip
    return store.NewUnit(
        user_id=user_id,
        session_id=session_id,
        kind=kind,
        unit_key=key,
        text=text,
        content_hash=content_hash(text),
        source_message_ids=sources,
        occurred_at=occurred_at,
        vector=None,
        embed_model=None,
        attrs=dict(attrs),
        valid_from=occurred_at if kind == "note" else None,
    )


def message_unit(msg: Message, user_id: int) -> store.NewUnit:
    return _unit(
        user_id,
        msg.session_id,
        "message",
        f"m:{msg.id}",
        f"{msg.speaker}: {msg.content}",
        [msg.external_id],
        msg.created_at,
    )


def edu_unit(edu: Edu, user_id: int, session_id: int, extractor: str) -> store.NewUnit:
    return _unit(
        user_id,
        session_id,
        "edu",
        "e:" + _key(edu.text, *edu.source_message_ids),
        edu.text,
        list(edu.source_message_ids),
        edu.occurred_at,
        speakers=list(edu.speakers),
        time_cue=edu.time_cue,
        entities=list(edu.entities),
        extractor=extractor,  # which path made it: "llm", or "rules" (the default or a fallback)
    )


def episode_unit(
    span: EpisodeSpan, turns: list[Turn], vectors: np.ndarray, user_id: int, session_id: int
) -> store.NewUnit:
    members = turns[span.start : span.end]
    # Sources most central to the episode first: the contract credits only the first three.
    centroid = vectors[span.start : span.end].sum(axis=0)
    order = np.argsort(-(vectors[span.start : span.end] @ centroid), kind="stable")
    sources = [members[i].message_id for i in order]
    day = format_day(members[0].created_at.astimezone(UTC).date())
    text = f"Episode ({day}) about {span.title}: {span.summary}"
    return _unit(
        user_id,
        session_id,
        "episode",
        f"ep:{members[0].message_id}:{members[-1].message_id}",
        text,
        sources,
        members[0].created_at,
        title=span.title,
        closed=span.closed,
        ended_at=members[-1].created_at.isoformat(),
    )


def note_unit(note: NoteCandidate, user_id: int, session_id: int) -> store.NewUnit:
    key = "note:" + _key(note.subject.lower(), note.attribute, note.value.lower())
    return _unit(
        user_id,
        session_id,
        "note",
        key,
        note.text,
        list(note.source_message_ids),
        note.occurred_at,
        subject=note.subject,
        attribute=note.attribute,
        value=note.value,
        confidence=note.confidence,
        support=1,
        correction=note.is_correction,
    )


def vectors_for(
    session: Session, embedder: Embedder, user_id: int, texts: dict[str, str]
) -> tuple[dict[str, bytes], int]:
    """Vectors by content hash for `texts` (hash -> text), reusing any this user already has for
    the embedder's model; and how many texts were encoded."""
    known = store.vectors_by_hash(session, user_id, embedder.model_name, list(texts))
    missing = {h: t for h, t in texts.items() if h not in known}
    if missing:
        vectors = embedder.encode(list(missing.values()))
        known.update({h: store.to_blob(v) for h, v in zip(missing, vectors, strict=True)})
    return known, len(missing)


def embed_units(session: Session, embedder: Embedder, user_id: int, units: list[store.NewUnit]) -> int:
    """Fill in vectors, reusing any this user already has for the same text; returns texts encoded."""
    texts: dict[str, str] = {}
    for unit in units:
        texts.setdefault(unit.content_hash, unit.text)
    known, encoded = vectors_for(session, embedder, user_id, texts)
    for unit in units:
        unit.vector = known[unit.content_hash]
        unit.embed_model = embedder.model_name
    return encoded


class EntityResolver:
    """Maps entity names to the user's entity units, merging near-duplicates (EMem, cosine >= 0.9)."""

    def __init__(self, known: list[MemoryUnit]) -> None:
        self.by_name: dict[str, str] = {}  # lowercased name or alias -> canonical key
        self.keys: list[str] = []
        self.vectors: list[np.ndarray] = []
        for unit in known:
            self._remember(unit.unit_key, unit.text, unit.attrs.get("aliases", []), unit.vector)

    def _remember(self, key: str, name: str, aliases: list[str], vector: bytes | None) -> None:
        for n in [name, *aliases]:
            self.by_name.setdefault(n.lower(), key)
        if vector is not None:
            self.keys.append(key)
            self.vectors.append(store.from_blob(vector))

    def resolve(
        self, names: list[str], embedder: Embedder, user_id: int
    ) -> tuple[dict[str, str], list[store.NewUnit]]:
        """name -> entity unit key for every name; plus the entity units to create."""
        fresh = sorted({n for n in names if n.lower() not in self.by_name})
        vectors = embedder.encode(fresh) if fresh else np.zeros((0, embedder.dim), dtype=np.float32)
        created: list[store.NewUnit] = []
        for name, vector in zip(fresh, vectors, strict=True):
            if name.lower() in self.by_name:  # an alias merged earlier in this loop
                continue
            target = self._nearest(name, vector)
            if target is not None:
                self.by_name[name.lower()] = target
                continue
            key = "ent:" + name.lower()
            unit = _unit(user_id, None, "entity", key, name, [], None, aliases=[])
            unit.vector, unit.embed_model = store.to_blob(vector), embedder.model_name
            created.append(unit)
            self._remember(key, name, [], unit.vector)
        return {n: self.by_name[n.lower()] for n in names}, created

    def _nearest(self, name: str, vector: np.ndarray) -> str | None:
        if sum(c.isalnum() for c in name) < ENTITY_MIN_CHARS or not self.vectors:
            return None
        sims = np.vstack(self.vectors) @ vector
        best = int(np.argmax(sims))
        return self.keys[best] if sims[best] >= ENTITY_MERGE_COSINE else None


def build_job(
    factory: sessionmaker[Session], embedder: Embedder, extractor: Extractor, job_id: str
) -> BuildReport | None:
    """Build the memory of one ingest job. Idempotent: running it again inserts nothing new.

    Returns None when the job no longer exists (its user was erased meanwhile).
    """
    with transaction(factory) as session:
        job = store.get_job(session, job_id)
        if job is None:
            return None
        store.set_job_status(session, job_id, "running")
        user_id, session_id = job.user_id, job.session_id
        new_messages = store.job_messages(session, job_id)
        all_messages = store.session_messages(session, session_id)
        entities = store.user_units(session, user_id, ["entity"])
        old_episodes = store.user_units(session, user_id, ["episode"], session_id)
        notes = store.user_units(session, user_id, ["note"])

    participants = list(dict.fromkeys(m.speaker for m in all_messages))
    edus = extractor.extract([_turn(m) for m in new_messages], participants)
    # The LLM extractor falls back to rules for a batch it could not do, and says so.
    extractor_used = "rules" if getattr(extractor, "last_fallback_reason", None) else extractor.name

    message_units = [message_unit(m, user_id) for m in all_messages]
    edu_units = [edu_unit(e, user_id, session_id, extractor_used) for e in edus]
    candidates = distill_notes(edus)
    new_note_units = [note_unit(n, user_id, session_id) for n in candidates]
    resolver = EntityResolver(entities)
    entity_keys, entity_units = resolver.resolve(
        [name for e in edus for name in e.entities], embedder, user_id
    )

    with transaction(factory) as session:
        encoded = embed_units(session, embedder, user_id, message_units + edu_units + new_note_units)
    turns = [_turn(m) for m in all_messages]
    turn_vectors = np.vstack([store.from_blob(u.vector or b"") for u in message_units])
    spans = segment(turns, turn_vectors)
    episode_units = [episode_unit(s, turns, turn_vectors, user_id, session_id) for s in spans]
    with transaction(factory) as session:
        encoded += embed_units(session, embedder, user_id, episode_units)

    new_keys = {u.unit_key for u in episode_units}
    with transaction(factory) as session:
        if store.get_job(session, job_id) is None:
            return None
        replace_episodes(session, user_id, old_episodes, new_keys)
        before = store.count_units(session, user_id)
        ids = store.insert_units(session, message_units + edu_units + entity_units + episode_units)
        note_ids = reconsolidate(session, user_id, notes, candidates, new_note_units)
        ids.update({e.unit_key: e.id for e in entities})
        links = _links(
            ids,
            note_ids,
            edus,
            edu_units,
            entity_keys,
            candidates,
            new_note_units,
            spans,
            episode_units,
            turns,
            store.user_units(session, user_id, ["edu"], session_id),
        )
        store.insert_links(session, user_id, links)
        created = store.count_units(session, user_id) - before
        store.set_job_status(session, job_id, "done")
    report = BuildReport(job_id, len(new_messages), created, encoded, extractor_used)
    log.info(
        "job %s built: %d messages -> %d new units (%d encoded, extractor %s)",
        job_id,
        report.messages,
        report.units,
        report.encoded,
        report.extractor,
    )
    return report


def replace_episodes(session: Session, user_id: int, old: list[MemoryUnit], new_keys: set[str]) -> None:
    """Drop the episodes the new cut no longer makes (a growing session's last one). An agent's
    correction is never dropped by a rebuild: it stays the current version while the episode it
    corrected is still cut the same way, and is closed (valid_to now, kept as history) once that
    episode is re-cut and so replaced by a new one."""
    predecessor = {e.superseded_by: e for e in old if e.superseded_by}

    def original(unit: MemoryUnit) -> MemoryUnit:
        while unit.id in predecessor:
            unit = predecessor[unit.id]
        return unit

    built = [e for e in old if not e.attrs.get("agent_correction")]
    store.delete_units(session, user_id, [e.id for e in built if e.unit_key not in new_keys])
    for unit in old:
        recut = original(unit).unit_key not in new_keys
        if unit.attrs.get("agent_correction") and unit.valid_to is None and recut:
            store.update_unit(session, unit.id, valid_to=datetime.now(UTC))


def reconsolidate(
    session: Session, user_id: int, notes: list[MemoryUnit], candidates: list[NoteCandidate],
    units: list[store.NewUnit],
) -> dict[str, int]:  # fmt: skip
    """Insert new notes; a repeated fact strengthens its note; a conflicting one closes the old note
    (valid_to, superseded_by) without deleting it. Returns note key -> id."""
    active = [n for n in notes if n.valid_to is None]
    closed_keys = {n.unit_key for n in notes if n.valid_to is not None}
    by_key = {n.unit_key: n for n in active}
    ids: dict[str, int] = {}
    for candidate, unit in zip(candidates, units, strict=True):
        if unit.unit_key in closed_keys:
            # A fact that held once, stopped, and holds again (moved back to Boston): a new version
            # beside the closed one, keyed by the message that restates it so a rerun finds it again.
            unit.unit_key = f"{unit.unit_key}@{unit.source_message_ids[0]}"[:200]
        existing = by_key.get(unit.unit_key)
        if existing is not None:
            support = int(existing.attrs.get("support", 1)) + 1
            confidence = 1 - (1 - float(existing.attrs.get("confidence", 0.5))) * (1 - candidate.confidence)
            attrs = dict(existing.attrs, support=support, confidence=round(confidence, 4))
            sources = list(dict.fromkeys([*existing.source_message_ids, *unit.source_message_ids]))
            store.update_unit(session, existing.id, attrs=attrs, source_message_ids=sources)
            ids[unit.unit_key] = existing.id
            continue
        new_id = store.insert_units(session, [unit])[unit.unit_key]
        ids[unit.unit_key] = new_id
        for old in active:
            same_slot = (
                old.attrs.get("subject", "").lower() == candidate.subject.lower()
                and old.attrs.get("attribute") == candidate.attribute
            )
            single = candidate.attribute in SINGLE_VALUED_ATTRIBUTES or candidate.is_correction
            if same_slot and single and old.unit_key != unit.unit_key and old.valid_to is None:
                store.update_unit(session, old.id, valid_to=candidate.occurred_at, superseded_by=new_id)
                old.valid_to = candidate.occurred_at
                log.info(
                    "note %d superseded by %d (%s %s)", old.id, new_id, candidate.subject, candidate.attribute
                )
        by_key[unit.unit_key] = MemoryUnit(
            id=new_id, unit_key=unit.unit_key, attrs=unit.attrs, source_message_ids=unit.source_message_ids
        )
    return ids


def _links(
    ids: dict[str, int], note_ids: dict[str, int], edus: list[Edu], edu_units: list[store.NewUnit],
    entity_keys: dict[str, str], candidates: list[NoteCandidate], note_units: list[store.NewUnit],
    spans: list[EpisodeSpan], episode_units: list[store.NewUnit], turns: list[Turn],
    session_edus: list[MemoryUnit],
) -> list[tuple[int, int, str, float]]:  # fmt: skip
    """Graph edges: EDU-entity, EDU-episode, note-EDU (support)."""
    links: list[tuple[int, int, str, float]] = []
    edu_id_by_source: dict[str, list[int]] = {}
    for edu, unit in zip(edus, edu_units, strict=True):
        edu_id = ids[unit.unit_key]
        for name in edu.entities:
            links.append((edu_id, ids[entity_keys[name]], "mentions", 1.0))
        for source in edu.source_message_ids:
            edu_id_by_source.setdefault(source, []).append(edu_id)
    # Episodes link to every EDU of their turns, earlier jobs' EDUs included (an episode may be new).
    for old in session_edus:
        for source in old.source_message_ids:
            edu_id_by_source.setdefault(source, []).append(old.id)
    for span, unit in zip(spans, episode_units, strict=True):
        episode_id = ids[unit.unit_key]
        for turn in turns[span.start : span.end]:
            for edu_id in set(edu_id_by_source.get(turn.message_id, [])):
                links.append((edu_id, episode_id, "in_episode", 1.0))
    for candidate, unit in zip(candidates, note_units, strict=True):
        note_id = note_ids[unit.unit_key]
        for source in candidate.source_message_ids:
            for edu_id in set(edu_id_by_source.get(source, [])):
                links.append((note_id, edu_id, "supported_by", candidate.confidence))
    return list({(s, d, r): (s, d, r, w) for s, d, r, w in links if s != d}.values())
