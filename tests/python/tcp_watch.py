"""A loopback TCP relay that watches the connections it carries: placed
between a client and a server (both on 127.0.0.1), it tells which
connections carried a streamed answer (the server's bytes held
`text/event-stream`) and whether the client has closed each of them, which
is what the server sees when a client ends a stream early. It also keeps the
first bytes each way, to show what went in plaintext."""

import selectors
import socket
import threading
import time

STREAM_MARK = b"text/event-stream"
KEPT_BYTES = 1 << 20  # of each direction of each connection


class _Connection:
    def __init__(self):
        self.streamed = False
        self.client_closed = False
        self.tail = b""  # the server's last bytes, for a mark split between reads
        self.sent = bytearray()  # by the client, the first KEPT_BYTES
        self.received = bytearray()  # by the client, the first KEPT_BYTES


class TcpWatch:
    """Relays 127.0.0.1:<port> to `target_port`; `url` is its origin."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = "http://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.connections = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def streams(self):
        """(connections that carried a streamed answer, how many of them the client closed)."""
        with self.lock:
            streamed = [c for c in self.connections if c.streamed]
            return len(streamed), sum(c.client_closed for c in streamed)

    def traffic(self):
        """(every byte kept that clients sent, every byte kept they received)."""
        with self.lock:
            return (b"".join(bytes(c.sent) for c in self.connections),
                    b"".join(bytes(c.received) for c in self.connections))

    def wait_streams_closed(self, count, deadline_s=20.0):
        """Wait until `count` streamed connections were closed by the client;
        the counts at the end. A deadline so that a failing test ends."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            streamed, closed = self.streams()
            if closed >= count:
                break
            time.sleep(0.02)
        return self.streams()

    def close(self):
        self.stopping = True
        self.thread.join(timeout=10)
        self.listener.close()

    # -- the relay --

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        while not self.stopping:
            for key, _ in sel.select(timeout=0.05):
                if key.data is None:
                    self._accept(sel)
                else:
                    self._relay(sel, key.fileobj, *key.data)
        for key in list(sel.get_map().values()):
            if key.data is not None:
                key.fileobj.close()
        sel.close()

    def _accept(self, sel):
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target_port))
        conn = _Connection()
        with self.lock:
            self.connections.append(conn)
        sel.register(client, selectors.EVENT_READ, (server, conn, True))
        sel.register(server, selectors.EVENT_READ, (client, conn, False))

    def _relay(self, sel, source, dest, conn, from_client):
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if data:
            kept = conn.sent if from_client else conn.received
            with self.lock:
                kept += data[:max(0, KEPT_BYTES - len(kept))]
        if data and not from_client:
            seen = conn.tail + data
            if STREAM_MARK in seen:
                with self.lock:
                    conn.streamed = True
            conn.tail = seen[-len(STREAM_MARK):]
        if data:
            try:
                dest.sendall(data)
                return
            except OSError:
                pass
        if from_client:
            with self.lock:
                conn.client_closed = True
        for s in (source, dest):
            try:
                sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
