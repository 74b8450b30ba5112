"""Conformance: Stablehand's live answers against the seed documents' own schemas (issue 22).

schemas/ holds one OpenAPI document per seed route: 003's and 004's are the fragments
their documents ship, vendored byte for byte (a comment on top says from which seed);
000's, 001's and 002's are written from their documents' prose. Each test_seed_*.py
provokes every status its seed documents and validates the body and the documented
headers with openapi-core (contracts.py); test_process_record.py checks the Process
record wherever it is handed out; test_schemathesis.py fuzzes the two fragments with
ids that exist.
"""
