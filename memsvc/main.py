"""The FastAPI app: factory, lifespan, body-size limit, and the one place errors become HTTP."""

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError

from memsvc import admin, api
from memsvc.errors import Conflict, Forbidden, Invalid, MemsvcError, NotFound, Unauthorized, Unavailable
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
}


def error(status: int, message: str, detail: object | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
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
    )
    app.include_router(api.router)
    app.include_router(admin.router)

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

    @app.exception_handler(MemsvcError)
    async def domain_error(_: Request, exc: MemsvcError) -> JSONResponse:
        return error(STATUS.get(type(exc), 400), str(exc))

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

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return error(503, "database connection lost, try again shortly")
        log.exception("database error")
        return error(500, "internal database error")

    return app
