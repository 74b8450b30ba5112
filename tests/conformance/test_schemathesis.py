"""schemathesis against each vendored seed fragment, with ids and pids that exist.

The daemon runs as a real subprocess (as in tests/system/test_fuzz.py). Before each
run the test starts real processes and hands their ids (Cyrnel) or pids (Tensorlake)
to schemathesis_hooks.py, which names them in explicit examples and mixes them into
generated path parameters; the hooks record every status, and the test asserts the
fuzzer really reached the fragment's success and conflict answers, not only 400/404.

Tensorlake's fragment is run with positive data only: it documents no 400, so an
answer to a pid outside its int32 (negative data) is documented nowhere in it;
Stablehand's 400 there is its own document's, checked in test_seed_003_tensorlake.py.
Its other checks still apply; ``allow_header_conformance`` is off for it because the
fragment lists only DELETE on a path where Tensorlake's API (and Stablehand) also
serve GET.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, alive, wait_for

HERE = Path(__file__).resolve().parent
TOKEN = "fuzz-token"
MAX_EXAMPLES = 50


def _schemathesis() -> str | None:
    candidate = Path(sys.executable).with_name("schemathesis")
    return str(candidate) if candidate.exists() else None


pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(_schemathesis() is None,
                                 reason="schemathesis is not installed (test extra)")]


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[DaemonProcess]:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)  # the daemon refuses a token others can read
    daemon = DaemonProcess(tmp_path / "state", "--token-file", str(token_file), "--log-level",
                           "warning", env={"STABLEHAND_ALLOWED_PROGRAMS": "sleep"}).start()
    yield daemon
    assert daemon.stop() == 0, daemon.log()


def _start_sleepers(daemon: DaemonProcess, count: int) -> list[dict[str, Any]]:
    records = []
    for _ in range(count):
        request = urllib.request.Request(
            f"{daemon.url}/processes", data=json.dumps({"argv": ["sleep", "300"]}).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
            records.append(json.loads(response.read()))
    return records


def _fuzz(daemon: DaemonProcess, tmp_path: Path, fragment: str, *extra: str,
          ids: tuple[int, ...] = (), pids: tuple[int, ...] = ()) -> Counter[int]:
    """Run schemathesis (every check) on one fragment; the statuses the daemon answered."""
    statuses = tmp_path / f"{fragment}.statuses"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
           "STABLEHAND_FUZZ_IDS": ",".join(map(str, ids)),
           "STABLEHAND_FUZZ_PIDS": ",".join(map(str, pids)),
           "STABLEHAND_FUZZ_STATUSES": str(statuses)}
    schemathesis = _schemathesis()
    assert schemathesis is not None
    result = subprocess.run(
        [schemathesis, "--config-file", str(HERE / "schemathesis.toml"), "run",
         str(HERE / "schemas" / fragment), "--url", daemon.url, "--checks", "all", *extra,
         "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--seed", "1",
         "-H", f"Authorization: Bearer {TOKEN}"],
        check=False, capture_output=True, text=True, timeout=100, cwd=tmp_path, env=env)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    return Counter(int(line.rsplit(" ", 1)[1]) for line in statuses.read_text().splitlines())


def test_cyrnel_fragment_reaches_200_and_409(fuzzed: DaemonProcess, tmp_path: Path) -> None:
    sleepers = _start_sleepers(fuzzed, 4)
    seen = _fuzz(fuzzed, tmp_path, "004_cyrnel_kill.openapi.yaml", ids=tuple(s["id"] for s in sleepers))
    assert seen[200] >= len(sleepers) and seen[409] >= len(sleepers), seen
    assert seen[400], seen   # ids that are no positive integer
    pids = [sleeper["pid"] for sleeper in sleepers]  # each was killed through the fragment's route
    wait_for(lambda: not any(alive(pid) for pid in pids), what=f"pids {pids} to be gone")


def test_tensorlake_fragment_reaches_204(fuzzed: DaemonProcess, tmp_path: Path) -> None:
    sleepers = _start_sleepers(fuzzed, 3)
    seen = _fuzz(fuzzed, tmp_path, "003_tensorlake_kill.openapi.yaml", "--mode", "positive",
                 "--exclude-checks", "allow_header_conformance", pids=tuple(s["pid"] for s in sleepers))
    assert seen[204] == len(sleepers) and seen[404] >= len(sleepers), seen
    for sleeper in sleepers:
        assert not alive(sleeper["pid"])  # a 204 comes once the process is gone
