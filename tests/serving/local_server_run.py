"""Run `serving.local` in a thread on a free 127.0.0.1 port (uvicorn, real HTTP) for a test module."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from serving.local import LocalServerConfig, build_app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(cfg: LocalServerConfig) -> Iterator[tuple[str, object]]:
    """Yields (base url, app) while uvicorn serves `cfg` (its port is replaced by a free one)."""
    cfg.port = free_port()
    app, _ = build_app(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=cfg.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # waiting for the socket to be bound, not a timing measurement
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{cfg.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def sse_events(lines: Iterator[str]) -> list[str]:
    """The `data` of each server-sent event (SSE spec: `data:` lines, an empty line ends an event)."""
    events, data = [], []
    for line in lines:
        if line == "":
            if data:
                events.append("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        events.append("\n".join(data))
    return events
