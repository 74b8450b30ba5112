"""Run by test_backpressure.py in a process of its own: a real keeper object, driven turn
by turn, whose socket to its client takes far more than PAUSE_AT at once.

It prints the seqs of the replies the client received. Not a test module itself.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from daemon.keeper import protocol
from daemon.keeper.journal import Journal
from daemon.keeper.server import Keeper

SO_SNDBUFFORCE = 32   # linux/socket.h; root may exceed wmem_max with it


def main(state: str) -> None:
    os.makedirs(os.path.join(state, protocol.KEEPER_DIR), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(os.path.join(state, protocol.SOCKET_NAME))
    listener.listen(8)
    journal = Journal(os.path.join(state, protocol.KEEPER_DIR, protocol.JOURNAL_NAME))
    keeper = Keeper(state, listener, journal, 1.0)

    def turns(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for key, mask in keeper.selector.select(0.02):
                key.data(mask)

    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)   # one process: no blocking
    client.connect(listener.getsockname())
    turns(0.2)
    conn = next(iter(keeper.conns.values()))
    conn.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)

    def line(message: dict[str, object]) -> bytes:
        return json.dumps(message).encode() + b"\n"
    client.sendall(line({"op": "hello", "version": protocol.VERSION, "state_dir": state, "seq": 1}))
    turns(0.2)
    # One write: a request whose (error) reply is 1.2 MiB, more than PAUSE_AT, then a small one.
    client.sendall(line({"op": "signal", "id": 1, "sig": "x" * (1200 * 1024), "seq": 2})
                   + line({"op": "list", "seq": 3}))
    client.setblocking(False)
    got = b""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and got.count(b"\n") < 3:
        turns(0.05)
        try:
            got += client.recv(16 << 20)
        except BlockingIOError:
            pass
    print(json.dumps([json.loads(raw).get("seq") for raw in got.splitlines() if raw]))


if __name__ == "__main__":
    main(sys.argv[1])
