"""The OpenAPI document the daemon serves at ``GET /openapi.json``.

``openapi.yaml`` beside this module is the source people edit; the daemon serves
``openapi.json``, generated from it, so PyYAML is not needed at run time (it is a
test dependency: tests/unit/test_dependencies.py checks that the JSON is the YAML
parsed). After editing the YAML, regenerate the JSON::

    python -m daemon.http.openapi
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("openapi.yaml")
SHIPPED = Path(__file__).with_name("openapi.json")


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document, parsed once."""
    parsed: dict[str, Any] = json.loads(SHIPPED.read_text())
    return parsed


def generate() -> str:
    """openapi.json's text, from openapi.yaml (needs PyYAML)."""
    import yaml  # the test extra: only this generator and the tests need it

    return json.dumps(yaml.safe_load(SOURCE.read_text()), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SHIPPED.write_text(generate())
    print(f"wrote {SHIPPED}")
