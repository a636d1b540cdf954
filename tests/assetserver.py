"""A real HTTPS (or HTTP) server on loopback for assets by URL, with a CA made by trustme.

Each path answers a list of responses in turn (the last one repeats), honours
If-None-Match with its ETag (the body's sha256), and every request is recorded, so a
test can count what the service downloaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme
from PIL import Image


def unique_png(size: int = 64) -> bytes:
    """A small PNG no other test has (random colours): its sha256 is new to every cache."""
    image = Image.frombytes("RGB", (size, size), os.urandom(size * size * 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    status: int
    headers: dict[str, str]


class AssetServer:
    """Serves ``routes`` over TLS (a certificate for ``localhost`` from its own CA) or plain HTTP."""

    def __init__(self, folder: Path, tls: bool = True) -> None:
        self.routes: dict[str, list[Answer]] = {}
        self.seen: list[Seen] = []
        self.ca_file = folder / f"ca-{uuid.uuid4().hex[:6]}.pem"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                answers = server.routes.get(self.path, [Answer(404)])
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                status, body, headers = answer.status, answer.body, dict(answer.headers)
                if status == 200:
                    etag = '"' + hashlib.sha256(body).hexdigest() + '"'
                    headers["ETag"] = etag
                    if self.headers.get("If-None-Match") == etag:
                        status, body = 304, b""
                server.seen.append(Seen(self.path, status, {k.lower(): v for k, v in self.headers.items()}))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        if tls:
            ca = trustme.CA()
            ca.cert_pem.write_to_path(str(self.ca_file))
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str, host: str = "localhost") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def add(self, path: str, *answers: Answer) -> str:
        self.routes[path] = list(answers)
        return path

    def downloads(self, path: str) -> int:
        """How many times ``path`` was sent whole (200), not answered 304 or refused."""
        return sum(1 for s in self.seen if s.path == path and s.status == 200)

    def requests(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
