"""A loopback HTTP file server for download tests (127.0.0.1, random port, Range support).

    with RangeServer({"/a.tgz": data}, cut_after=1000) as server:
        download(server.url("/a.tgz"), dest)
        server.requests  # [{"path": ..., "range": ..., "status": ...}, ...]

``cut_after=N`` makes the first GET send the full Content-Length but only N
bytes, then close the connection (an interrupted transfer). ``ignore_range``
answers 200 with the whole file even when a Range header is sent.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class RangeServer:
    """Serve in-memory files over HTTP/1.0 on 127.0.0.1; record every request."""

    def __init__(
        self,
        files: dict[str, bytes],
        *,
        cut_after: int | None = None,
        ignore_range: bool = False,
    ) -> None:
        self.files = dict(files)
        self.cut_after = cut_after
        self.ignore_range = ignore_range
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _record(self, path: str, range_header: str | None, status: int) -> int:
        with self._lock:
            self.requests.append({"path": path, "range": range_header, "status": status})
            return len(self.requests)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                data = owner.files.get(self.path)
                range_header = self.headers.get("Range")
                if data is None:
                    owner._record(self.path, range_header, 404)
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
                if match and not owner.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        owner._record(self.path, range_header, 416)
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    end = int(match.group(2)) + 1 if match.group(2) else len(data)
                    body = data[start:end]
                    status = 206
                else:
                    body = data
                    status = 200
                number = owner._record(self.path, range_header, status)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    last = start + len(body) - 1
                    self.send_header("Content-Range", f"bytes {start}-{last}/{len(data)}")
                self.end_headers()
                if owner.cut_after is not None and number == 1:
                    self.wfile.write(body[: owner.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler
