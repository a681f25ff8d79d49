"""Loopback TCP ports for the embedded stack: is one free, choose one, wait for one to answer."""

from __future__ import annotations

import socket
import time

from infra.foundation.embedded import HOST, port_answers  # noqa: F401  (the stack's probes, re-exported)


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when a server could listen on ``host:port`` now.

    SO_REUSEADDR is set like the servers do (PostgreSQL, Tansu, GStreamer), so sockets in TIME_WAIT do not
    count as taken; a listener on the port (on this address or on 0.0.0.0) does.
    """
    if not 0 < port < 65536:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not port_answers(port, host, timeout=0.2)


def choose_free_port(avoid: set[int] | frozenset[int] = frozenset(), host: str = HOST) -> int:
    """A port the kernel says is free now (not in ``avoid``). Another program may still take it first."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in avoid and port_is_free(port, host):
            return port
    raise OSError("no free TCP port found on the loopback address")


def wait_until(check, timeout: float, interval: float = 0.05) -> bool:
    """Call ``check()`` until it returns true or ``timeout`` seconds pass; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
