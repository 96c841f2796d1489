"""Small network helpers shared by the node's helpers, the benchmarks and the tests."""

from __future__ import annotations

import socket


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free right now for ``kind`` (TCP by default, ``SOCK_DGRAM`` for UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def port_taken(port: int, kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> bool:
    """Whether something holds ``port`` on ``host`` for ``kind`` (it cannot be bound): how a
    UDP listener, which accepts no connection, is seen to be up."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False
