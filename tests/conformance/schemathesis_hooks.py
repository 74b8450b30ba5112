"""schemathesis hooks for tests/conformance/test_schemathesis.py (loaded via SCHEMATHESIS_HOOKS).

Left alone, the fuzzer almost never names a process that exists, so against the seed
fragments it only ever sees 400 and 404. The test starts real processes first and
hands their ids and pids over in the environment; these hooks then

* add explicit examples that name them, each twice: Cyrnel's kill answers 200 then
  409, Tensorlake's DELETE 204 then 404 (examples run first, in order);
* mix the same values into every later phase's generated path parameters;
* append every status the daemon answered to a file, so the test can assert what
  the fuzzer actually reached.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import strategies as st

IDS = [value for value in os.environ.get("STABLEHAND_FUZZ_IDS", "").split(",") if value]
PIDS = [int(value) for value in os.environ.get("STABLEHAND_FUZZ_PIDS", "").split(",") if value]
STATUS_FILE = os.environ.get("STABLEHAND_FUZZ_STATUSES")


def _existing(operation: Any) -> list[dict[str, Any]]:
    """Path parameters naming processes that exist, for ``operation``."""
    if "{id}" in operation.path:
        return [{"id": value} for value in IDS]
    if "{pid}" in operation.path:
        return [{"pid": value} for value in PIDS]
    return []


@schemathesis.hook
def before_add_examples(context: Any, examples: list[Any]) -> None:
    operation = context.operation
    for parameters in _existing(operation):
        for _ in range(2):
            if operation.method.upper() == "POST":   # Cyrnel's body: any JSON object
                examples.append(operation.Case(path_parameters=parameters, body={},
                                               media_type="application/json"))
            else:
                examples.append(operation.Case(path_parameters=parameters))


@schemathesis.hook
def before_generate_path_parameters(context: Any, strategy: Any) -> Any:
    existing = _existing(context.operation)
    return st.one_of(strategy, st.sampled_from(existing)) if existing else strategy


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if STATUS_FILE:
        with open(STATUS_FILE, "a") as statuses:
            statuses.write(f"{case.operation.method.upper()} {case.operation.path} "
                           f"{response.status_code}\n")

