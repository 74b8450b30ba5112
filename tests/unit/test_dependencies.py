"""What importing a part of Stablehand pulls in, checked in a fresh interpreter.

The client library is imported by programs that only talk to a daemon: it must not
load the daemon's output store or its logging. The HTTP layer serves its OpenAPI
document from the JSON shipped beside it, so PyYAML is a test dependency only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

import daemon.http

HTTP_DIR = Path(daemon.http.__file__).parent


def _modules_after(statement: str) -> set[str]:
    """The names in sys.modules after ``statement`` runs in a new interpreter."""
    script = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    return set(json.loads(result.stdout))


def test_importing_the_client_loads_neither_the_output_store_nor_structlog() -> None:
    loaded = _modules_after("import daemon.client")
    assert "daemon.client" in loaded
    assert not {"daemon.output", "structlog"} & loaded, sorted(loaded)


def test_the_daemon_app_serves_its_openapi_document_without_pyyaml() -> None:
    loaded = _modules_after("from daemon.http.routes import openapi_document; openapi_document()")
    assert "yaml" not in loaded


def test_the_shipped_openapi_json_is_the_yaml_source_parsed() -> None:
    """openapi.yaml is the source; regenerate the JSON with ``python -m daemon.http.openapi``."""
    source = yaml.safe_load((HTTP_DIR / "openapi.yaml").read_text())
    shipped = json.loads((HTTP_DIR / "openapi.json").read_text())
    assert shipped == source, "openapi.json is stale: run `python -m daemon.http.openapi`"
