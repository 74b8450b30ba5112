"""How big each workload is, and which workloads a run selects."""

from __future__ import annotations

import re
from dataclasses import dataclass

CASES = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9")


@dataclass(frozen=True)
class Sizes:
    children: int = 200
    churn: int = 2000
    raw_churn: int = 1000
    latency_reps: int = 200
    read_seconds: float = 5.0
    records: int = 200_000
    memory_children: int = 1000
    rounds: int = 3
    capture_bytes: int = 1 << 30     # B8: what `head -c` writes
    capture_cap: int = 4 << 20       # B8+: max_output_bytes
    managed: int = 200               # B9: managed processes (and the floor's unmanaged ones)
    managed_seconds: float = 10.0    # B9: each CPU window


QUICK = Sizes(children=10, churn=40, raw_churn=20, latency_reps=5, read_seconds=0.5, records=2000,
              memory_children=20, rounds=1, capture_bytes=16 << 20, managed=20, managed_seconds=3.0)


def parse_cases(text: str) -> frozenset[str]:
    """``B1,B4`` -> {"B1", "B4"}; ``all`` -> every case. B5+ is B5's, B7k B7's, B8+ B8's."""
    if text.strip().lower() == "all":
        return frozenset(CASES)
    chosen = set()
    for item in text.split(","):
        case = item.strip().upper().rstrip("+K")
        if case not in CASES:
            raise ValueError(f"unknown case {item.strip()!r}; the cases are {', '.join(CASES)}")
        chosen.add(case)
    if not chosen:
        raise ValueError("no case selected")
    return frozenset(chosen)


def parse_bytes(text: str) -> int:
    """``1073741824``, ``1G``, ``16M``, ``512K`` (binary units, as ``head -c`` reads them)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive size (e.g. 1G, 16M, 4096)")
    shift = {"": 0, "K": 10, "M": 20, "G": 30}[match.group(2).upper()]
    return int(match.group(1)) << shift
