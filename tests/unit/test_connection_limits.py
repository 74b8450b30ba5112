"""Connection limits from the config, and the TCP budget lowered to what descriptors allow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.config import Config
from daemon.http.connections import FD_RESERVE, MIN_TCP_BUDGET, Connections, Limits


def _config(tmp_path: Path, **values: Any) -> Config:
    return Config(state_dir=tmp_path, listen=None, socket=None, **values)


def test_limits_come_from_the_config(tmp_path: Path) -> None:
    config = _config(tmp_path, max_connections=100, socket_max_connections=7, header_timeout=3.0,
                     keepalive_timeout=9.0)
    assert Limits.from_config(config, nofile=1 << 20) == Limits(100, 7, 3.0, 9.0)
    connections = Connections(Limits.from_config(config))
    assert (connections.tcp.limit, connections.unix.limit) == (100, 7)


def test_the_tcp_budget_is_lowered_so_the_socket_always_has_descriptors(tmp_path: Path) -> None:
    config = _config(tmp_path)   # 1024 TCP, 256 socket
    assert Limits.from_config(config, nofile=1024).max_connections == 1024 - 256 - FD_RESERVE
    assert Limits.from_config(config, nofile=700).max_connections == MIN_TCP_BUDGET
    assert Limits.from_config(config, nofile=700).socket_max_connections == 256
