"""The HTTP contract as pydantic models (shapes and validation of what clients send and get)."""

import re
from datetime import datetime
from typing import Literal

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
