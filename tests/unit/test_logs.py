"""Log formats and ids: JSON lines, request ids a client may choose, masked database URLs."""

import io
import json
import logging

from memsvc import logs


def log_through(fmt: logs.Format, *, request: str | None = None, job: str | None = None) -> str:
    stream = io.StringIO()
    logger = logging.getLogger(f"memsvc.test.{fmt}")
    logger.propagate = False
    logger.handlers[:] = [logs.make_handler(fmt, stream)]
    logger.setLevel(logging.INFO)
    r_token, j_token = logs.request_id.set(request), logs.job_id.set(job)
    try:
        logger.info("hello %s", "world")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logs.request_id.reset(r_token)
        logs.job_id.reset(j_token)
    return stream.getvalue()


def test_json_lines_carry_the_ids_that_are_set() -> None:
    hello, failed = (json.loads(line) for line in log_through("json", request="r-1").splitlines())
    assert hello["message"] == "hello world" and hello["level"] == "INFO" and hello["request_id"] == "r-1"
    assert "job_id" not in hello and hello["time"].endswith("+00:00")
    assert "ValueError: boom" in failed["exception"]  # the traceback stays inside its one line
    in_job = json.loads(log_through("json", job="j-9").splitlines()[0])
    assert in_job["job_id"] == "j-9" and "request_id" not in in_job


def test_text_lines_name_the_ids() -> None:
    text = log_through("text", request="r-1", job="j-9")
    assert " req=r-1 job=j-9 hello world" in text
    assert " req=" not in log_through("text")


def test_a_client_request_id_is_kept_only_when_plain() -> None:
    assert logs.new_request_id("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in ("", "has space", "new\nline", "x" * 65, '"quoted"'):
        fresh = logs.new_request_id(bad)
        assert fresh != bad and len(fresh) == 32


def test_database_urls_lose_their_password() -> None:
    assert logs.mask_url("postgresql://u:s3cret@db.internal:5432/m?sslmode=require") == (
        "postgresql://u:***@db.internal:5432/m?sslmode=require"
    )
    assert logs.mask_url("postgresql://u:p@[::1]:5432/m") == "postgresql://u:***@[::1]:5432/m"
    assert logs.mask_url("postgresql://u@/m?host=/tmp/x") == "postgresql://u@/m?host=/tmp/x"
