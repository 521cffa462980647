"""A local OpenAI-compatible chat endpoint serving scripted answers, broken ones included."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: `content` is the assistant message text (any string, valid JSON or not)."""

    status: int = 200
    content: str = '{"edus": []}'
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def edus_reply(edus: list[dict[str, Any]], delay_s: float = 0.0) -> Reply:
    return Reply(content=json.dumps({"edus": edus}), delay_s=delay_s)


class FakeLlm:
    """Replies in script order; the last one repeats. Records each request and the peak concurrency."""

    def __init__(self, *replies: Reply) -> None:
        self.script = list(replies) or [Reply()]
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.times: list[float] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def _next(self, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply = fake._next(body, {k.lower(): v for k, v in self.headers.items()})
                try:
                    time.sleep(reply.delay_s)
                    if reply.status == 200:
                        payload = {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": reply.content},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    else:
                        payload = {"error": {"message": f"scripted {reply.status}"}}
                    data = json.dumps(payload).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (time-out tests)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base
                pass

        return Handler

    def start(self) -> FakeLlm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fake_llm(*replies: Reply) -> Iterator[FakeLlm]:
    server = FakeLlm(*replies).start()
    try:
        yield server
    finally:
        server.stop()
