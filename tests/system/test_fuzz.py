"""Fuzz the whole API with schemathesis (all checks) against a daemon that can harm nothing.

The fuzzed daemon may only run ``true`` (allowed_programs), keeps at most four
children, needs a bearer token (so schemathesis's ignored_auth check has
something to verify), and never signals a process it did not start (the
default). The run is bounded in time; any 5xx or schema violation fails it.

One worker: with two, schemathesis's coverage phase calls ``ast.parse`` (through
hypothesis's lambda descriptions) from both threads at once, and CPython 3.11
can fail that with ``SystemError: AST constructor recursion depth mismatch``
(seen once in five runs here; the daemon was fine). One worker generated 1,250 to
1,650 cases in 60 s; the run is 40 s, about 1,000 cases, to keep the whole suite
under ten minutes on two cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
FUZZ_SECONDS = 40


def _schemathesis() -> str | None:
    candidate = Path(sys.executable).with_name("schemathesis")
    return str(candidate) if candidate.exists() else None


@pytest.mark.timeout(FUZZ_SECONDS * 3)
@pytest.mark.skipif(_schemathesis() is None, reason="schemathesis is not installed (test extra)")
def test_schemathesis_finds_nothing(daemon: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("fuzz-token\n")
    token_file.chmod(0o600)  # the daemon refuses a token others can read
    d = daemon("--token-file", str(token_file), "--max-concurrent", "4", "--log-level", "warning",
               env={"STABLEHAND_ALLOWED_PROGRAMS": "true"}).start()
    result = subprocess.run(
        [_schemathesis(), "--config-file", str(HERE / "schemathesis.toml"), "run",
         f"{d.url}/openapi.json", "--checks", "all", "--max-time", str(FUZZ_SECONDS),
         "--workers", "1", "-H", "Authorization: Bearer fuzz-token", "--seed", "1"],
        capture_output=True, text=True, timeout=FUZZ_SECONDS * 2, cwd=tmp_path)
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "failures" not in result.stdout.lower().split("summary")[-1], report
    assert d.stop() == 0, "the daemon survived the fuzzing and stopped cleanly"
