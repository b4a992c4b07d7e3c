"""Small TCP helpers: a reachability probe (fail in seconds where client SDKs would retry for
minutes) and a free port."""

from __future__ import annotations

import random
import socket
import urllib.parse
from pathlib import Path


def unreachable(url: str, default_port: int, timeout_s: float = 3.0) -> OSError | None:
    """The connection error at ``url``'s host and port, or None when something listens there."""
    parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
    port = parsed.port or (443 if parsed.scheme == "https" else default_port)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc


RAY_WORKER_PORTS_END = 20_000  # Ray's default max_worker_port is 19999


def free_port() -> int:
    """A TCP port free on this machine now, outside the kernel's ephemeral port range.

    A port is only held once its server binds it, which may be minutes after it was picked
    (HAProxy binds its stats port when Serve first starts on an embedded cluster). A port from
    the ephemeral range (what ``bind(0)`` hands out) can meanwhile become the local end of any
    outgoing connection; a test run once lost 17 tests to HAProxy finding its stats port
    taken. The kernel never hands out ports below that range on its own, and Ray's workers
    take theirs from a range of their own, so only another server choosing the same one could
    collide.
    """
    low, high = _ephemeral_range()
    # Between Ray's worker ports (10002-19999 by default: every Ray worker binds one) and the
    # ephemeral range where there is room (Linux: 20000-32767), else above the range.
    first, end = (
        (RAY_WORKER_PORTS_END, low) if low - RAY_WORKER_PORTS_END >= 1_000 else (high + 1, 65_536)
    )
    if end - first >= 1_000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(first, end)
            if _bindable(port):
                return port
    with socket.socket() as s:  # no room outside the range: the kernel's pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 65_535  # elsewhere: below 32768 is outside Linux's and macOS's ranges


def _bindable(port: int) -> bool:
    """Whether a server could bind ``port`` on every interface (HAProxy binds ``*:port``)."""
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True
