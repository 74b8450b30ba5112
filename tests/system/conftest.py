"""System-tier fixtures: daemons as real subprocesses, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def factory(*extra: str, state: str = "state", **kwargs: Any) -> DaemonProcess:
        instance = DaemonProcess(tmp_path / state, *extra, **kwargs)
        started.append(instance)
        return instance

    yield factory
    for instance in started:
        instance.cleanup()
