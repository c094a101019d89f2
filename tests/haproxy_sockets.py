"""What a running HAProxy listens on, for the tests that serve through it (psutil)."""

from __future__ import annotations

import psutil


def haproxy_processes(root: psutil.Process) -> list[psutil.Process]:
    """The HAProxy processes among ``root``'s descendants."""
    return [p for p in root.children(recursive=True) if p.name() == "haproxy"]


def listening_addresses(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    """``(ip, port)`` of every TCP socket the ``processes`` listen on."""
    return {
        (c.laddr.ip, c.laddr.port)
        for p in processes for c in p.net_connections("inet")
        if c.status == psutil.CONN_LISTEN
    }  # fmt: skip
