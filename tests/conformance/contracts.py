"""The documents a live answer is checked against, and the check itself (openapi-core).

A *contract* is one OpenAPI document: a seed's (schemas/, vendored or written from
its prose) or Stablehand's own (daemon/http/openapi.yaml, the one /openapi.json
serves). :func:`conforms` hands a real answer to openapi-core's response validator,
as a strict generated client would read it: the status must be one the document
lists for the operation, the body must match its schema (OpenAPI 3.0 ``nullable``,
3.1 type lists and ``format`` all honoured), every header the document lists for
that status must be present and of its type. A 204's body must be empty.

openapi-core finds the operation from a request URL on one of the document's own
servers, so each contract carries that server; the path and method are the ones
the test really sent.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import yaml
from multidict import CIMultiDictProxy
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import (
    OAS30Validator,
    OAS31Validator,
    oas30_format_checker,
    oas31_format_checker,
)

from daemon.http.routes import openapi_document

SCHEMAS = Path(__file__).with_name("schemas")


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request as sent and its answer as received, read whole."""

    method: str
    path: str
    request_body: bytes
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    document: dict[str, Any]
    server: str
    # A seed lists the headers its server sends: each must be there. Stablehand's own
    # document lists some that depend on configuration (X-RateLimit-* only when rate
    # limiting is on) and marks the ones always sent ``required``.
    listed_headers_are_sent: bool = True

    @functools.cached_property
    def api(self) -> OpenAPI:
        return OpenAPI.from_dict(self.document)

    def _responses(self, method: str, template: str) -> dict[str, Any]:
        responses: dict[str, Any] = self.document["paths"][template][method.lower()]["responses"]
        return responses

    def documents(self, method: str, template: str, status: int) -> bool:
        return str(status) in self._responses(method, template)

    def documented_headers(self, method: str, template: str, status: int) -> list[str]:
        """The headers an answer with ``status`` must carry."""
        response = self._resolve(self._responses(method, template)[str(status)])
        return [name for name, header in response.get("headers", {}).items()
                if self.listed_headers_are_sent or self._resolve(header).get("required")]

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def validate(self, answer: Answer, template: str) -> None:
        """Raise AssertionError saying what is wrong if ``answer`` breaks this document."""
        where = f"{answer.method} {answer.path} -> {answer.status}, against {self.name}"
        assert self.documents(answer.method, template, answer.status), \
            f"{where}: status {answer.status} is not documented"
        for header in self.documented_headers(answer.method, template, answer.status):
            assert header in answer.headers, f"{where}: documented header {header} is missing"
        content_type = answer.headers.get("Content-Type", "")
        if answer.status == 204:
            assert answer.body == b"", f"{where}: a 204 must have no body, got {answer.body!r}"
        request = MockRequest(self.server, answer.method, answer.path, data=answer.request_body)
        response = MockResponse(answer.body, status_code=answer.status,
                                headers=dict(answer.headers), content_type=content_type)
        try:
            self.api.validate_response(request, response)
        except Exception as exc:  # openapi-core's errors carry the reasons in __cause__/schema_errors
            details = getattr(exc, "schema_errors", None) or exc.__cause__ or ""
            raise AssertionError(f"{where}: {exc} {details}\nbody: {answer.body[:2000]!r}") from exc


def _seed(file_name: str, name: str, server: str) -> Contract:
    return Contract(name, yaml.safe_load((SCHEMAS / file_name).read_text()), server)


SEED_000 = _seed("000_reference_server_terminate_gracefully.openapi.yaml",
                 "seed 000's prose (reference-server)", "http://localhost:5000")
SEED_001 = _seed("001_reference_server_terminate.openapi.yaml",
                 "seed 001's prose (reference-server)", "http://localhost:5000")
SEED_002 = _seed("002_psys_kill.openapi.yaml", "seed 002's prose (psys)", "http://localhost:3000")
SEED_003 = _seed("003_tensorlake_kill.openapi.yaml", "seed 003's OpenAPI fragment (Tensorlake)",
                 "https://example-sandbox.sandbox.tensorlake.ai")
SEED_004 = _seed("004_cyrnel_kill.openapi.yaml", "seed 004's OpenAPI fragment (Cyrnel)",
                 "http://localhost:9371")
STABLEHAND = Contract("Stablehand's own OpenAPI document", openapi_document(),
                      openapi_document()["servers"][0]["url"], listed_headers_are_sent=False)


async def call(client: Any, method: str, path: str, *, json_body: Any = None,
               token: str | None = None) -> Answer:
    """Send one request through the aiohttp test client (JSON bodies as application/json)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"" if json_body is None else json.dumps(json_body).encode()
    if json_body is not None:
        headers["Content-Type"] = "application/json"
    async with client.request(method, path, data=data or None, headers=headers) as response:
        body = await response.read()
        return Answer(method, path, data, response.status, response.headers, body)


def conforms(answer: Answer, template: str, seed: Contract, *, seed_silent: bool = False) -> Any:
    """Check ``answer`` against the seed's document and Stablehand's own; return its JSON.

    ``seed_silent``: the seed does not document this status (Stablehand's edge adds
    401/429, and 400 on Tensorlake's route), so only Stablehand's document is asked,
    and the test states that the seed indeed does not list it.
    """
    if seed_silent:
        assert not seed.documents(answer.method, template, answer.status), \
            f"{seed.name} documents {answer.status}: check it against the seed"
    else:
        seed.validate(answer, template)
    STABLEHAND.validate(answer, template)
    return answer.json() if answer.body else None


def assert_process_record(record: Any) -> None:
    """``record`` is a Process both as Cyrnel's fragment (OpenAPI 3.0, ``nullable``) and as
    Stablehand's own document (3.1) define it: no ``ref: null``, no ``stdin: "null"``."""
    for validator in (
            OAS30Validator(SEED_004.document["components"]["schemas"]["Process"],
                           format_checker=oas30_format_checker),
            OAS31Validator(STABLEHAND.document["components"]["schemas"]["Process"],
                           format_checker=oas31_format_checker)):
        errors = [error.message for error in validator.iter_errors(record)]
        assert not errors, f"{errors} in {record}"
