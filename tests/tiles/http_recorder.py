"""A local HTTP server that records every request it gets (and answers 404).

It runs in a child process, not a thread: rasterio holds the GIL in some GDAL calls (metadata,
overview queries), so a request made from inside one of them to a server thread of the same
process would deadlock instead of failing the test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Self

_SERVER = r'''
import http.server, sys
log = open(sys.argv[1], "a", buffering=1)

class Recorder(http.server.BaseHTTPRequestHandler):
    def _record(self):
        log.write(f"{self.command} {self.path}\n")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _record

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
print(server.server_address[1], flush=True)
server.serve_forever()
'''


class RequestRecorder:
    """``with RequestRecorder(tmp_path) as server:`` ... ``server.requests()``."""

    def __init__(self, directory: Path) -> None:
        self.log_path = Path(directory) / "http-requests.log"
        self.log_path.write_text("")
        self._process: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(self.log_path)], stdout=subprocess.PIPE, text=True
        )
        self.port = int(self._process.stdout.readline())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._process.stdout.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def requests(self) -> list[str]:
        """Every request so far, as "GET /path" lines."""
        return self.log_path.read_text().splitlines()


# A file server with HTTP Range requests (GDAL's /vsicurl/ reads COGs block by block), in its own
# process for the same reason as the recorder.
_RANGE_SERVER = r'''
import http.server, sys
from pathlib import Path

class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        ranges = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not ranges or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        start, _, end = ranges.removeprefix("bytes=").partition("-")
        first, last = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data[first:last + 1])

def handler(*args, **kwargs):
    return Handler(*args, directory=sys.argv[1], **kwargs)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
print(server.server_port, flush=True)
server.serve_forever()
'''


class RangeFileServer:
    """``with RangeFileServer(folder) as server:`` ... ``server.url("scene.tif")``: the files of
    ``folder`` over HTTP, with Range requests (what GDAL's /vsicurl/ needs)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._process: subprocess.Popen | None = None
        self.port = 0

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _RANGE_SERVER, str(self.directory)], stdout=subprocess.PIPE,
            text=True)
        self.port = int(self._process.stdout.readline())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._process.kill()
        self._process.wait(timeout=10)
        self._process.stdout.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"
