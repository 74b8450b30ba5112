"""Stablehand: a process supervisor with a persistent SQLite registry and an HTTP API."""

__version__ = "0.1.0"
