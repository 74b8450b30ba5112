"""The keeper runs on the standard library alone: nothing of the daemon's dependencies loads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from tests.keeper.conftest import ROOT

FORBIDDEN = ("aiohttp", "aiosqlite", "structlog", "psutil", "orjson", "uvloop", "yaml",
             "prometheus_client", "asyncio")
ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def loaded(names: list[str]) -> list[str]:
    return sorted({n for n in names if n.split(".")[0] in FORBIDDEN})


def test_importing_the_keeper_and_the_cli_loads_no_dependency() -> None:
    probe = ("import sys\n"
             "import daemon.cli, daemon.keeper.main, daemon.keeper.server\n"
             "print('\\n'.join(sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                          check=True, timeout=60)
    assert loaded(done.stdout.split()) == []


async def test_a_running_keeper_never_imports_a_dependency(start_keeper: Any, connect: Any) -> None:
    """Run through `stablehand keeper` (the cli) with -X importtime, exercise every op, stop it."""
    keeper = start_keeper(None, python_flags=("-X", "importtime"))
    client = await connect(keeper)
    await client.spawn(1, ["cat"], ENV, stdin="pipe", max_output_bytes=4096)
    await client.stdin_write(1, b"x" * 10000)
    await client.stdin_close(1)
    await client.spawn(2, ["sleep", "100"], ENV)
    await client.signal(2, signal.SIGTERM, group=True)
    for _ in range(2):
        async for event in client.exits():
            await client.ack([event.id])
            break
    await client.list()
    assert keeper.stop() == 0
    lines = [line for line in keeper.log().splitlines() if line.startswith("import time:")]
    names = [line.split("|")[-1].strip() for line in lines]
    assert "daemon.keeper.server" in names and "subprocess" in names
    assert loaded(names) == []
