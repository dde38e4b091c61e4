"""A TCP proxy on a free loopback port that a test can cut and mend: a store out of reach, then back.

Cut, it closes every connection it carries and every new one at once (a client sees the
connection drop, as when a store's host goes away); mended, it forwards again to the same place.
The state behind it (a moto server's buckets) is untouched, which a restarted moto server would lose.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

from integration.harness import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._stopped = False
        self._accepting = threading.Thread(target=self._accept, name="tcpproxy-accept", daemon=True)
        self._accepting.start()

    def cut(self) -> None:
        """From now on, until `mend`, no byte passes: the connections open now are closed."""
        with self._lock:
            self._cut = True
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    @contextlib.contextmanager
    def cut_off(self) -> Iterator[None]:
        """Cut for the block, mended after it whatever happens in it."""
        self.cut()
        try:
            yield
        finally:
            self.mend()

    def mend(self) -> None:
        with self._lock:
            self._cut = False

    def stop(self) -> None:
        self._stopped = True
        self.cut()
        self._listener.close()
        self._accepting.join(timeout=10)

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream), name="tcpproxy-pipe", daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy both ways until either side closes (or `cut` shuts both down)."""
        ends = {client: upstream, upstream: client}
        with self._lock:
            self._open.update(ends)
        try:
            while True:
                readable, _, _ = select.select(list(ends), [], [], 0.5)
                with self._lock:
                    if self._cut or self._stopped:
                        return
                for source in readable:
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    ends[source].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._open.difference_update(ends)
            for end in ends:
                end.close()
