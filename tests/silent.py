"""A TCP server on 127.0.0.1 that accepts connections and never answers (a hung database or S3 endpoint)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from collections.abc import Iterator


@contextlib.contextmanager
def silent_server(connections: int = 64, on_accept: Callable[[], None] | None = None) -> Iterator[tuple[int, list[socket.socket]]]:
    """Yields ``(port, accepted)``: the port and the connections accepted so far (held open, never answered).

    ``on_accept`` is called after each accepted connection (e.g. to note when a client first connected).
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(connections)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the server socket closed under accept()
            for _ in range(connections):
                held.append(server.accept()[0])
                if on_accept is not None:
                    on_accept()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], held
    finally:
        server.close()
        for conn in held:
            conn.close()
