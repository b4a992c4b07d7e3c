"""Small TCP helpers: a reachability probe (fail in seconds where client SDKs would retry for
minutes) and a free loopback port."""

from __future__ import annotations

import socket
import urllib.parse


def unreachable(url: str, default_port: int, timeout_s: float = 3.0) -> OSError | None:
    """The connection error at ``url``'s host and port, or None when something listens there."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    port = parsed.port or (443 if parsed.scheme == "https" else default_port)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server about to bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
