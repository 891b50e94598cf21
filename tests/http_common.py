"""A Range-capable HTTP server on 127.0.0.1 for the download tests (no test reaches the internet)."""

from __future__ import annotations

import hashlib
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

    Every answer carries the file's ``ETag`` (its MD5, quoted; none for paths in ``no_etag``), and a Range request
    whose ``If-Range`` names another ETag gets the whole file (200), as RFC 9110 asks (not for paths in
    ``ignore_if_range``: a 206 with the new ETag). ``cap`` (path -> bytes) answers
    every request for that path with a 206 of at most that many bytes; ``encoding`` (path -> coding) sends that
    ``Content-Encoding`` header (the body unchanged); ``unit`` is the Content-Range unit written.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.no_length: set[str] = set()
        self.offset_zero: set[str] = set()
        self.offset_off: set[str] = set()
        self.no_etag: set[str] = set()
        self.ignore_if_range: set[str] = set()
        self.cap: dict[str, int] = {}
        self.encoding: dict[str, str] = {}
        self.unit = "bytes"
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
                etag = None if path in server.no_etag else f'"{hashlib.md5(data).hexdigest()}"'
                if rng and self.headers.get("If-Range") not in (None, etag) and path not in server.ignore_if_range:
                    rng = None  # another version than the one the client holds: the whole file
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
                end = min(len(data), start + server.cap[path]) if path in server.cap else len(data)
                partial = bool(rng) or path in server.cap
                self.send_response(206 if partial else 200)
                if partial:
                    self.send_header("Content-Range", f"{server.unit} {start}-{end - 1}/{len(data)}")
                if etag is not None:
                    self.send_header("ETag", etag)
                if path in server.encoding:
                    self.send_header("Content-Encoding", server.encoding[path])
                self.send_header("Content-Length", str(end - start))
                self.end_headers()
                body = data[start:end]
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
