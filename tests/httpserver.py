"""A small HTTP file server on 127.0.0.1 for the download-cache tests (no network needed).

It serves in-memory files and can misbehave on request: cut the connection part-way through a
file, ignore ``Range``, advertise a sha256 in ``X-Linked-Etag`` behind a redirect (as huggingface.co
does), answer slowly, or fail with an HTTP status. Every request is logged for assertions.

    with FileServer() as srv:
        srv.add_url("https://huggingface.co/x/y.ckpt", data, cut_after=1000)
        monkeypatch.setenv("C2L_MIRROR", srv.base_url)   # https://HOST/PATH -> <base>/HOST/PATH
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import urlsplit


@dataclass
class ServedFile:
    """One file and how to (mis)behave when serving it."""

    data: bytes
    cut_after: Optional[int] = None  # send this many body bytes, then drop the connection…
    cut_times: int = 1  # …for this many responses
    ignore_range: bool = False  # always answer 200 with the whole file
    linked_etag: Optional[str] = None  # answer with a 302 carrying X-Linked-Etag / X-Linked-Size
    delay_s: float = 0.0  # sleep between 64 KiB chunks (to make downloads overlap)
    fail_status: Optional[int] = None  # answer every request with this status
    fail_times: int = 0  # only the first N requests fail with fail_status (0 = always)
    served: int = field(default=0)  # responses sent for this file (GET only)


@dataclass
class LoggedRequest:
    method: str
    path: str
    range: Optional[str]


class FileServer:
    """A ThreadingHTTPServer on 127.0.0.1 with a random free port; a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, ServedFile] = {}
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = urlsplit(self.path).path
                rng = self.headers.get("Range")
                with server._lock:
                    server.log.append(LoggedRequest(self.command, path, rng))
                if path.startswith("/_cdn/"):
                    f = server.files.get(path[len("/_cdn"):])
                    redirected = True
                else:
                    f = server.files.get(path)
                    redirected = False
                if f is None:
                    self._empty(404)
                    return
                if f.linked_etag and not redirected:
                    self.send_response(302)
                    self.send_header("Location", "/_cdn" + path)
                    self.send_header("X-Linked-Etag", f'"{f.linked_etag}"')
                    self.send_header("X-Linked-Size", str(len(f.data)))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with server._lock:
                    n = f.served
                    if not head:
                        f.served += 1
                if f.fail_status and (f.fail_times == 0 or n < f.fail_times):
                    self._empty(f.fail_status)
                    return
                data = f.data
                start = 0
                m = re.match(r"^bytes=(\d+)-(\d*)$", rng or "")
                if m and not f.ignore_range:
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else len(data) - 1
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[start : end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "none" if f.ignore_range else "bytes")
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if head:
                    return
                cut = f.cut_after if (f.cut_after is not None and n < f.cut_times) else None
                limit = len(body) if cut is None else min(cut, len(body))
                pos = 0
                try:
                    while pos < limit:
                        step = min(65536, limit - pos)
                        self.wfile.write(body[pos : pos + step])
                        pos += step
                        if f.delay_s:
                            self.wfile.flush()
                            time.sleep(f.delay_s)
                    self.wfile.flush()
                    if cut is not None:  # drop the connection mid-body
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def _empty(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:  # clients hang up on purpose
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes, **options) -> ServedFile:
        """Serve *data* at *path* (``/HOST/PATH`` for mirrored URLs)."""
        f = ServedFile(data=data, **options)
        self.files[path] = f
        return f

    def add_url(self, url: str, data: bytes, **options) -> ServedFile:
        """Serve *data* where ``C2L_MIRROR=<base_url>`` sends a fetch of *url*."""
        parts = urlsplit(url)
        return self.add("/" + parts.netloc + parts.path, data, **options)

    def gets(self, path_part: str = "") -> list[LoggedRequest]:
        """GET requests whose path contains *path_part* (redirect hops included)."""
        with self._lock:
            return [r for r in self.log if r.method == "GET" and path_part in r.path]

    def start(self) -> "FileServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
