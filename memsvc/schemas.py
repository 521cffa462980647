"""The HTTP contract as pydantic models (shapes and validation of what clients send and get)."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

Id = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")


class Strict(BaseModel):
    # Unknown fields are an error: a typo in a field name should not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class KeyCreate(Strict):
    tenant: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = Field(default="default", min_length=1, max_length=200)


class KeyCreated(BaseModel):
    id: int
    tenant: str
    name: str
    key: str


class MessageIn(Strict):
    id: str = Id
    role: Literal["user", "assistant", "system"]
    speaker: str | None = Field(default=None, min_length=1, max_length=200)
    content: str = Field(min_length=1)
    created_at: AwareDatetime

    @field_validator("content")
    @classmethod
    def _not_blank(cls, content: str) -> str:
        if not content.strip():
            raise ValueError("content is empty")
        if "\x00" in content:
            raise ValueError("content contains a NUL character")
        return content


class IngestRequest(Strict):
    messages: list[MessageIn] = Field(min_length=1)
    wait: bool = False


class IngestResponse(BaseModel):
    job_id: str
    accepted: int
    duplicates: int
    status: str


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


class SearchRequest(Strict):
    query: str = Field(min_length=1, max_length=10_000)
    limit: int = Field(default=50, ge=1, le=1000)
    max_tokens: int = Field(default=1000, ge=1, le=200_000)
    mode: Literal["fast", "deep"] = "deep"
    as_of: AwareDatetime | None = None
    # Only memory of what happened in [occurred_after, occurred_before) (by each unit's occurred_at).
    occurred_after: AwareDatetime | None = None
    occurred_before: AwareDatetime | None = None
    # When the question is asked: relative time in the query ("last summer") is resolved against it.
    asked_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _range(self) -> "SearchRequest":
        if self.occurred_after and self.occurred_before and self.occurred_after >= self.occurred_before:
            raise ValueError("occurred_after must be earlier than occurred_before")
        return self


class HitOut(BaseModel):
    id: str
    kind: Literal["edu", "note", "episode", "message"]
    text: str
    score: float
    session_id: str | None
    source_message_ids: list[str]
    occurred_at: datetime | None
    tokens: int


class SearchResponse(BaseModel):
    hits: list[HitOut]
    context: str
    context_tokens: int


class ErrorOut(BaseModel):
    error: str
    detail: object | None = None


class UserOut(BaseModel):
    id: str
    messages: int
    sessions: int
    units: int  # memory units of every kind that are search hits (messages, EDUs, notes, episodes)
    by_kind: dict[str, int]
    entities: int
    links: int


class FeedbackRequest(Strict):
    """Which hits of a search the agent used (cited) and which it did not (RMM's reward signal)."""

    used: list[str] = Field(default_factory=list, max_length=1000)
    unused: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("used", "unused")
    @classmethod
    def _hit_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not re.fullmatch(r"(edu|note|episode|message)-[0-9]{1,18}", i)]
        if bad:
            raise ValueError(f"not hit ids (like 'edu-12'): {bad[:5]}")
        return ids


class FeedbackOut(BaseModel):
    updated: int


# --- admin (/v1/admin) ------------------------------------------------------------------------


class AdminTenantOut(BaseModel):
    name: str
    created_at: datetime
    users: int
    keys_active: int
    keys_revoked: int
    messages: int
    units: int  # memory units of every kind


class AdminTenantPage(BaseModel):
    items: list[AdminTenantOut]
    next_cursor: str | None  # pass as ?cursor= for the next page; null on the last


class AdminUserOut(BaseModel):
    id: str
    created_at: datetime
    messages: int
    sessions: int
    episodes: int
    edus: int
    notes: int
    entities: int
    message_units: int
    edges: int  # unit_link rows
    vectors: int  # units with a vector of the serving model (entities included)
    indexed_vectors: int  # of those, the kinds search uses: what the FAISS index must hold
    index_size: int  # vectors this API process's FAISS index holds for the user
    index_type: str  # "Flat", "IVF<lists>,Flat nprobe=<n>", or "none"


class AdminUserPage(BaseModel):
    items: list[AdminUserOut]
    next_cursor: str | None


class AdminGraphNode(BaseModel):
    id: str  # "{kind}-{unit id}"
    kind: str
    text: str  # cut at 200 characters
    hops: int  # distance from the requested node


class AdminGraphEdge(BaseModel):
    src: str
    dst: str
    relation: str
    weight: float


class AdminGraphOut(BaseModel):
    node: str
    depth: int
    limit: int
    truncated: bool  # more nodes were within reach than `limit`: the nearest are kept
    nodes: list[AdminGraphNode]
    edges: list[AdminGraphEdge]


class AdminJobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    error: str | None
    attempts: int
    tenant: str
    user_id: str
    session_id: str
    created_at: datetime
    updated_at: datetime


class AdminJobPage(BaseModel):
    items: list[AdminJobOut]
    next_cursor: str | None


class AdminIndexTenant(BaseModel):
    tenant: str
    users: int
    postgres_vectors: int
    faiss_vectors: int
    mismatched_users: int
    ok: bool


class AdminIndexUser(BaseModel):
    user_id: str
    postgres_vectors: int
    faiss_vectors: int
    missing: int  # in Postgres, not in the index
    unexpected: int  # in the index, not in Postgres (for this model)
    duplicates: int
    index_type: str
    ok: bool


class AdminIndexHealth(BaseModel):
    ok: bool
    model: str
    dim: int
    index_seq: int  # the change the index has applied up to
    db_seq: int  # the last change in Postgres
    applied: int  # changes applied just before comparing (ordinary lag, not damage)
    postgres_vectors: int
    faiss_vectors: int
    orphan_vectors: int  # in the index under users Postgres no longer has
    tenants: list[AdminIndexTenant]
    users: list[AdminIndexUser] | None  # per user, with ?tenant=


class AdminRebuildOut(BaseModel):
    model: str
    vectors: int
    users: int
    seq: int
    seconds: float


class AdminReembedRequest(Strict):
    model: str | None = Field(default=None, min_length=1, max_length=300)  # default: MEMSVC_EMBED_MODEL
    batch_size: int = Field(default=256, ge=1, le=4096)


class AdminReembedOut(BaseModel):
    tenant: str
    model: str
    done: int  # units whose vector is of `model`
    remaining: int  # units with a vector of another model
    job_id: int | None  # the newest re-embed job the queue still holds (finished ones are removed)
    job_status: str | None  # procrastinate's: todo, doing, failed, ...


class AdminKeyOut(BaseModel):
    id: int
    tenant: str
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class AdminKeyPage(BaseModel):
    items: list[AdminKeyOut]
    next_cursor: str | None


class AdminAuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    tenant: str | None
    target: str
    counts: dict[str, object]


class AdminAuditPage(BaseModel):
    items: list[AdminAuditOut]
    next_cursor: str | None


# --- a user's memory (/v1/users/{user_id}/memories, export, import) -------------------------------

MemoryKind = Literal["message", "episode", "edu", "note", "entity"]


class MemoryOut(BaseModel):
    id: str  # "{kind}-{unit id}", the id search hits carry
    kind: MemoryKind
    text: str
    session_id: str | None  # the client's session id (entities belong to none)
    source_message_ids: list[str]
    occurred_at: datetime | None
    valid_from: datetime | None
    valid_to: datetime | None  # set: closed (superseded or corrected), kept as history
    superseded_by: str | None  # the memory id of the version that replaced it
    salience: float
    created_at: datetime


class MemoryPage(BaseModel):
    memories: list[MemoryOut]
    next_cursor: str | None  # pass as ?cursor= for the next page; null on the last


class MemoryRefOut(BaseModel):
    id: str
    kind: MemoryKind
    text: str


class MemoryLinkOut(BaseModel):
    relation: str  # mentions, in_episode, supported_by
    weight: float
    direction: Literal["out", "in"]  # out: this memory is the edge's source
    other: MemoryRefOut


class SourceMessageOut(BaseModel):
    id: str  # the client's message id
    session_id: str
    role: str
    speaker: str
    content: str
    created_at: datetime


class MemoryDetailOut(MemoryOut):
    attrs: dict[str, object]
    links: list[MemoryLinkOut]  # at most 500
    links_total: int
    history: list[MemoryOut]  # every version of this memory, itself included, oldest first
    sources: list[SourceMessageOut]  # the raw messages it was built from


class MemoryCorrection(Strict):
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty")
        if "\x00" in text:
            raise ValueError("text contains a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, which a JSON escape can make
            raise ValueError("text is not valid Unicode") from None
        return text


class ImportOut(BaseModel):
    user_id: str
    sessions: int
    messages: int
    units: int
    links: int
    vectors: int  # units the index takes (searchable kinds with a vector of the serving model)


# The export format, one JSON object per line: a header, then sessions, messages, units, links.
# `id`, `session`, `superseded_by`, `src` and `dst` are references inside the file only.
Finite = Field(allow_inf_nan=False)


class ExportHeader(Strict):
    type: Literal["header"] = "header"
    format: Literal["memsvc-export"] = "memsvc-export"
    version: Literal[1] = 1
    model: str = Field(min_length=1, max_length=300)
    dim: int = Field(ge=1, le=65536)
    user_id: str
    exported_at: AwareDatetime


class ExportSession(Strict):
    type: Literal["session"] = "session"
    id: int
    external_id: str = Id
    created_at: AwareDatetime


class ExportMessage(Strict):
    type: Literal["message"] = "message"
    id: int
    session: int
    external_id: str = Id
    role: Literal["user", "assistant", "system"]
    speaker: str = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1)
    created_at: AwareDatetime
    received_at: AwareDatetime


class ExportUnit(Strict):
    type: Literal["unit"] = "unit"
    id: int
    kind: MemoryKind
    unit_key: str = Field(min_length=1, max_length=200)
    session: int | None
    text: str
    content_hash: str  # SHA-256 of text
    source_message_ids: list[str]
    occurred_at: AwareDatetime | None
    valid_from: AwareDatetime | None
    valid_to: AwareDatetime | None
    superseded_by: int | None
    salience: float = Finite
    attrs: dict[str, Any]
    embed_model: str | None = Field(max_length=300)
    vector: str | None  # base64 of the float32 bytes
    created_at: AwareDatetime


class ExportLink(Strict):
    type: Literal["link"] = "link"
    src: int
    dst: int
    relation: str = Field(min_length=1, max_length=32)
    weight: float = Finite


ExportLine = Annotated[
    ExportHeader | ExportSession | ExportMessage | ExportUnit | ExportLink, Field(discriminator="type")
]
