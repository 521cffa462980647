"""The FastAPI app: factory, lifespan, body-size limit, request ids and timing, and the one place errors
become HTTP."""

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from memsvc import admin, api, logs, memory_routes, metrics
from memsvc.errors import (
    Conflict,
    Forbidden,
    Invalid,
    MemsvcError,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from memsvc.settings import Settings
from memsvc.state import AppState

log = logging.getLogger(__name__)

STATUS = {
    NotFound: 404,
    Conflict: 409,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    Unavailable: 503,
    RateLimited: 429,
}


def error(
    status: int, message: str, detail: object | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


def create_app(settings: Settings, database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.memsvc = AppState.open(settings, database_url)
        log.info("API ready")
        yield
        app.state.memsvc.close()

    app = FastAPI(
        title="memsvc",
        version="0.1.0",
        lifespan=lifespan,
        description="Long-term memory for conversational agents.",
        # FastAPI's native OpenTelemetry hooks stay off whatever the environment says
        # (FASTAPI_OTEL_AUTO_CONFIGURE, OTEL_*): memsvc sends nothing anywhere; /metrics is pulled.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.metrics = metrics.Metrics(lambda: getattr(app.state, "memsvc", None))
    app.include_router(metrics.router)
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(memory_routes.router)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Reject oversize bodies by their declared length, before they are read. A body without a
        # length (chunked) is refused outright rather than buffered to find out.
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return error(413, f"request body larger than {limit} bytes")
        if declared is None and request.method in ("POST", "PUT", "PATCH"):
            return error(411, "Content-Length required")
        return await call_next(request)

    access = logging.getLogger("memsvc.access")

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Outermost: every answer, 413s and crashes included, gets a request id and is measured.
        rid = logs.new_request_id(request.headers.get("x-request-id"))
        token = logs.request_id.set(rid)
        start = time.perf_counter()
        try:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, metrics.route_label(request))
                response = error(500, "internal error", {"request_id": rid})
            elapsed = time.perf_counter() - start
            route = metrics.route_label(request)
            app.state.metrics.observe(request, response.status_code, elapsed)
            access.info("%s %s %d %.1fms", request.method, route, response.status_code, elapsed * 1000)
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            logs.request_id.reset(token)

    @app.exception_handler(MemsvcError)
    async def domain_error(_: Request, exc: MemsvcError) -> JSONResponse:
        if isinstance(exc, RateLimited):
            # Retry-After is whole seconds; round up so a client that obeys it is let through.
            retry = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            return error(429, str(exc), {"retry_after_s": round(exc.retry_after_s, 3)}, retry)
        return error(STATUS.get(type(exc), 400), str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own answers (unknown path 404, wrong method 405, unparsable body 400) in the
        # same {"error": ...} shape as every other 4xx.
        return error(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
        return error(422, f"invalid request: {summary}", problems)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return error(503, "database unavailable, try again shortly")

    @app.exception_handler(PoolTimeout)
    async def database_busy(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection stayed taken for the pool's whole timeout: overload, not a bug.
        log.warning("no database connection free: %s", exc)
        return error(
            503, "server busy: no database connection free, try again shortly", None, {"Retry-After": "1"}
        )

    @app.exception_handler(DataError)
    async def database_refused_value(_: Request, exc: DataError) -> JSONResponse:
        # PostgreSQL's "data exception" class: a value from the request it cannot hold (a NUL in a
        # text, an id past bigint). The client's input, not a fault here; the transaction rolled back.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        log.info("database refused a request value: %s", reason)
        return error(422, f"invalid value: {reason}")

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error(503, "database connection lost, try again shortly")
        log.exception("database error")
        return error(500, "internal database error")

    return app
