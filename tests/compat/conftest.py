"""Fixtures for the seed-document tests: a running managed child and a stranger."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
NO_SUCH_PID = 999_999  # above this machine's pid_max: never a live process


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """A process Stablehand did not start; it must survive every default-config call."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


async def start(client: Any, argv: list[str] | None = None, **body: Any) -> dict[str, Any]:
    response = await client.post("/processes", json={"argv": argv or ["sleep", "60"], **body})
    assert response.status == 201
    return await response.json()


async def record_of(client: Any, process_id: int) -> dict[str, Any]:
    return await (await client.get(f"/processes/{process_id}")).json()


async def wait_idle(client: Any, process_id: int) -> dict[str, Any]:
    response = await client.get(f"/processes/{process_id}/wait", params={"timeout": "20"})
    assert response.status == 200
    return await response.json()
