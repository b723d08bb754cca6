"""A fault-injecting HTTP proxy on loopback, between S3's clients and the S3 server the tests start.

Real sockets: every client (boto3, s3fs in Spark's Python workers, delta-rs, S3A) is
pointed at the proxy by `AWS_ENDPOINT_URL`, and the proxy forwards each request to
the server, one request per connection. GETs of objects whose key matches `faulty`
are answered, at the rate `share`, with S3's `503 SlowDown` or a reset connection;
some keys get a burst of failures on their first requests (longer than a client's own
retries). What it did is counted, for the tests and their figures.
"""

from __future__ import annotations

import contextlib
import random
import socket
import socketserver
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class FaultPlan:
    """Which requests fail: a share of the `methods` requests whose path contains `faulty`, and the first
    `bursts[key]` of a key (after the first `after`, let through)."""

    faulty: str
    share: float = 0.0
    bursts: dict[str, int] = field(default_factory=dict)
    methods: tuple[str, ...] = ("GET",)
    after: int = 0  # requests of a faulty key let through before any fails
    seed: int = 0
    gets: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def decide(self, method: str, path: str) -> str | None:
        """None to forward the request; else "slowdown" or "reset"."""
        key = unquote(path.split("?", 1)[0])
        if method not in self.methods or self.faulty not in key:
            return None
        with self.lock:
            self.gets[key] += 1
            if self.gets[key] <= self.after:
                return None
            burst = next((n for k, n in self.bursts.items() if key.endswith(k)), 0)
            fail = self.failed[key] < burst or self.random.random() < self.share
            if not fail:
                return None
            self.failed[key] += 1
            kind = "slowdown" if self.random.random() < 0.6 else "reset"
            self.kinds[kind] += 1
            return kind

    def heal(self, key: str) -> None:
        """End the burst of the keys ending in `key`: from now on they fail only at the random `share`."""
        with self.lock:
            self.bursts[key] = 0

    def figures(self) -> dict[str, int]:
        with self.lock:
            return {
                "object_gets": sum(self.gets.values()),
                "gets_failed": sum(self.failed.values()),
                "answered_503_slowdown": self.kinds["slowdown"],
                "connections_reset": self.kinds["reset"],
                "objects_affected": len(self.failed),
            }


def _read_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            break
        head += chunk
    return head


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        client: socket.socket = self.request
        head = _read_head(client)
        if not head:
            return
        line, _, rest = head.partition(b"\r\n")
        method, path = line.decode("latin-1").split(" ")[:2]
        fault = self.server.plan.decide(method, path)  # type: ignore[attr-defined]
        if fault == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if fault == "slowdown":
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(SLOW_DOWN)}\r\nConnection: close\r\n\r\n".encode()
                + SLOW_DOWN
            )
            client.close()
            return
        headers, _, body = rest.partition(b"\r\n\r\n")
        kept = [h for h in headers.split(b"\r\n") if not h.lower().startswith((b"connection:", b"keep-alive:"))]
        request = line + b"\r\n" + b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + body
        upstream = socket.create_connection(self.server.upstream)  # type: ignore[attr-defined]
        upstream.sendall(request)
        sending = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
        sending.start()
        _pump(upstream, client)
        client.close()
        upstream.close()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    """The proxy, listening on a free loopback port, forwarding to `upstream` (host, port)."""

    def __init__(self, upstream: tuple[str, int], plan: FaultPlan) -> None:
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.upstream, self.server.plan = upstream, plan  # type: ignore[attr-defined]
        self.plan = plan
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
