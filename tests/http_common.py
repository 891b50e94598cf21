"""A Range-capable HTTP server on 127.0.0.1 for the download tests (no test reaches the internet)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class LocalServer:
    """Serves ``files`` (URL path -> bytes) at ``url``, answering ``Range: bytes=N-`` with 206 and a Content-Range.

    Misbehaviours, each a set of URL paths: ``truncate`` sends half the bytes once, then closes; ``no_length`` sends
    half once without Content-Length (close-delimited); ``offset_zero`` answers a Range request with 206 from byte 0;
    ``offset_off`` answers it with 206 from one byte earlier than asked. ``delay`` seconds pass between 64 KiB chunks
    (a slow server). ``requests`` records ``(path, Range header)`` of every request.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.no_length: set[str] = set()
        self.offset_zero: set[str] = set()
        self.offset_off: set[str] = set()
        self.delay = 0.0
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                if path not in server.files:
                    self.send_error(404)
                    return
                data = server.files[path]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path in server.no_length:
                    server.no_length.discard(path)
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                if rng and path in server.offset_zero:
                    start = 0
                if rng and path in server.offset_off:
                    start -= 1
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if path in server.truncate:
                    server.truncate.discard(path)
                    body = body[: len(body) // 2]
                    self.close_connection = True
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i:i + (1 << 16)])
                    time.sleep(server.delay)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(name="server")
def server_fixture():
    s = LocalServer()
    yield s
    s.close()
