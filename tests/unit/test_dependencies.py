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


SERVE = """
import json, os, signal, socket, sys, threading, time
from daemon.cli import main

state, sock = sys.argv[1], sys.argv[2]

def ask(request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(sock)
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
        return answer

served = []

def ok(answer: bytes) -> bool:
    return answer.split(b"\\r\\n", 1)[0].endswith(b" 200 OK")

def client() -> None:
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if ok(ask(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")):
                    break
            except OSError:
                time.sleep(0.02)
        body = b'{"argv": ["true"]}'
        created = ask(b"POST /processes HTTP/1.0\\r\\nContent-Type: application/json\\r\\n"
                      b"Content-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
        number = json.loads(created.split(b"\\r\\n\\r\\n", 1)[1])["id"]
        ask(b"GET /processes/%d/wait?timeout=10 HTTP/1.0\\r\\n\\r\\n" % number)
        served.append(ok(ask(b"GET /metrics HTTP/1.0\\r\\n\\r\\n")))
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=client, daemon=True).start()
code = main(["serve", "--state-dir", state, "--listen", "none", "--socket", sock,
             "--token-file", "none", "--log-level", "warning"])
print(json.dumps([code, served, sorted(name for name, module in sys.modules.items() if module is not None)]))
"""


def test_a_serving_daemon_loads_only_what_it_needs(tmp_path: Path) -> None:
    """Issue 21 (memory): a real ``stablehand serve`` that started, ran a child and was
    scraped has not imported rich (structlog.dev would), psutil, prometheus-client, tomllib
    (no --config), PyYAML, nor the client commands' modules."""
    result = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path / "state"), str(tmp_path / "sh.sock")],
                            capture_output=True, text=True, timeout=60, check=True)
    code, served, loaded = json.loads(result.stdout.splitlines()[-1])
    assert code == 0 and served == [True], result.stderr
    assert "daemon.supervisor" in loaded and "structlog" in loaded
    unwanted = {"rich", "psutil", "prometheus_client", "tomllib", "yaml", "daemon.cli_client",
                "daemon.client", "daemon.services_apply", "daemon.mcp_tools"}
    assert not unwanted & set(loaded), sorted(unwanted & set(loaded))


def test_the_daemon_app_serves_its_openapi_document_without_pyyaml() -> None:
    loaded = _modules_after("from daemon.http.routes import openapi_document; openapi_document()")
    assert "yaml" not in loaded


def test_the_shipped_openapi_json_is_the_yaml_source_parsed() -> None:
    """openapi.yaml is the source; regenerate the JSON with ``python -m daemon.http.openapi``."""
    source = yaml.safe_load((HTTP_DIR / "openapi.yaml").read_text())
    shipped = json.loads((HTTP_DIR / "openapi.json").read_text())
    assert shipped == source, "openapi.json is stale: run `python -m daemon.http.openapi`"
