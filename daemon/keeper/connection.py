"""One client connection of the keeper: line framing in, bounded buffering out.

Input is read in 256 KiB pieces and split on newlines without rescanning what
was already searched (a 4 MiB line costs one pass). A line longer than
:data:`~.protocol.MAX_LINE` ends the connection after an error reply. Output is
sent at once when the socket takes it and buffered otherwise; while more than
:data:`PAUSE_AT` bytes wait, the keeper stops reading this connection's requests
(a client that writes without reading cannot make the keeper buffer its
replies without bound), and past :data:`DROP_AT` the connection is dropped
(exits stay in the journal; the daemon gets them from ``list`` when it reconnects).
"""

from __future__ import annotations

import socket
from typing import Any

from .protocol import MAX_LINE, encode

RECV = 256 * 1024
PAUSE_AT = 1024 * 1024
DROP_AT = 64 * 1024 * 1024


class Connection:
    __slots__ = (
        "closed",
        "closing",
        "deadline",
        "events",
        "fd",
        "hello",
        "inbuf",
        "outbuf",
        "peer_pid",
        "scanned",
        "sock",
    )

    def __init__(self, sock: socket.socket, deadline: float, peer_pid: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.scanned = 0          # inbuf[:scanned] holds no newline
        self.outbuf = bytearray()
        self.hello = False        # said a valid hello: the keeper's daemon
        self.closing = False      # close once outbuf is sent; read nothing more
        self.closed = False
        self.deadline = deadline  # for the hello
        self.peer_pid = peer_pid
        self.events = 0           # what the keeper's selector waits for on it

    def receive(self) -> bool:
        """Read what the socket holds. False when the peer has gone."""
        try:
            data = self.sock.recv(RECV)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        self.inbuf += data
        return True

    def next_line(self) -> bytes | None:
        """The next complete line (without its newline), or None.

        Raises OverflowError when a line grows past MAX_LINE without ending.
        """
        end = self.inbuf.find(b"\n", self.scanned)
        if end < 0:
            self.scanned = len(self.inbuf)
            if self.scanned > MAX_LINE:
                raise OverflowError
            return None
        if end > MAX_LINE:
            raise OverflowError
        line = bytes(self.inbuf[:end])
        del self.inbuf[:end + 1]
        self.scanned = 0
        return line

    @property
    def paused(self) -> bool:
        return len(self.outbuf) > PAUSE_AT

    def queue(self, message: dict[str, Any]) -> bool:
        """Queue a message to go with the next flush. False if the connection must be dropped.

        The replies to the requests of one read, and the exits of one reap, are queued
        and flushed together: one send(2) for a burst instead of one per message, and
        one wake-up of the daemon.
        """
        self.outbuf += encode(message)
        return len(self.outbuf) <= DROP_AT

    def send(self, message: dict[str, Any]) -> bool:
        """Queue a message and try to send. False if the connection must be dropped."""
        return self.queue(message) and self.flush()

    def flush(self) -> bool:
        """Send what the socket takes now. False if the peer has gone."""
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            del self.outbuf[:sent]
        return True

    def flush_blocking(self, timeout: float) -> None:
        """Last words before the keeper exits: send what is queued, waiting at most ``timeout``."""
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(self.outbuf)
        except OSError:
            pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
