"""The benchmark's table: one row per workload that ran, with its floor, ratio and target."""

from __future__ import annotations

from typing import Any

from bench import capture, keeper, managed
from bench.sizes import Sizes


def rows(r: dict[str, Any], sizes: Sizes, cases: frozenset[str]) -> tuple[list[tuple[str, ...]], list[str]]:
    raw = r.get("raw", {})
    out: list[tuple[str, ...]] = []
    notes: list[str] = []
    if "B1" in cases:
        out.append(("B1", f"start {sizes.children} sleeps (16 clients) until running", f"{r['b1_ms']:.0f} ms",
                    f"raw {raw['spawn_ms']:.0f} ms", f"{r['b1_ms'] / raw['spawn_ms']:.2f}x raw", "<= 2x raw"))
    if "B2" in cases:
        out.append(("B2", f"kill those {sizes.children} until idle and gone", f"{r['b2_ms']:.0f} ms",
                    f"raw {raw['kill_ms']:.0f} ms", f"{r['b2_ms'] / raw['kill_ms']:.2f}x raw", "<= 100 ms"))
    if "B3" in cases:
        out.append(("B3", "one kill -> idle seen by a waiting client", f"p50 {r['b3_p50_ms']:.2f} ms",
                    f"p99 {r['b3_p99_ms']:.2f} ms", "", "p50 <= 2 ms, p99 <= 5 ms"))
    if "B4" in cases:
        out.append(("B4", f"{sizes.churn} x true start -> idle (16 clients)", f"{r['b4_per_s']:.0f}/s",
                    f"raw {raw['churn_per_s']:.0f}/s", f"{r['b4_per_s'] / raw['churn_per_s']:.0%} of raw",
                    ">= 50%"))
    if "B5" in cases:
        out.append(("B5", "GET /processes/{id}, 16 keep-alive clients", f"{r['b5_per_s']:.0f}/s",
                    f"bare {r['bare_rate']:.0f}/s", f"{r['b5_per_s'] / r['bare_rate']:.0%} of bare",
                    ">= 50%"))
        out.append(("B5+", "the same with /metrics scraped every 100 ms", f"{r['b5_scraped_per_s']:.0f}/s",
                    f"{r['scrapes']} scrapes", f"{r['b5_scraped_per_s'] / r['b5_per_s']:.0%} of B5",
                    "not slower"))
    if "B6" in cases:
        out.append(("B6", f"{sizes.records} records: start-up / list 100 / create",
                    f"{r['b6_startup_s']:.2f} s / {r['b6_list_ms']:.1f} ms / {r['b6_create_ms']:.1f} ms",
                    f"empty create {r['empty_create_ms']:.1f} ms",
                    f"{r['b6_create_ms'] / r['empty_create_ms']:.2f}x empty", "<= 2 s; <= 20 ms; +-20%"))
    if "B7" in cases:
        b7 = r["b7"]
        per_child_kib = (b7["loaded"]["rss_kib"] - b7["before"]["rss_kib"]) / b7["children"]
        fds_per_child = (b7["loaded"]["fds"] - b7["before"]["fds"]) / b7["children"]
        out.append(("B7", f"RSS / threads / fds of a fresh daemon; then per child, {b7['children']} children",
                    f"{b7['idle']['rss_kib'] / 1024:.1f} MiB / {b7['idle']['threads']} / {b7['idle']['fds']}",
                    f"+{per_child_kib:.1f} KiB, {b7['loaded']['threads']} threads,"
                    f" +{fds_per_child:.2f} fd per child", "", "<= 60 MiB; <= 20 KiB; <= 10; <= 1"))
        keeper_rows, keeper_notes = keeper.report_rows(r.get("b7_keeper"))
        out += keeper_rows
        notes += keeper_notes
    if "B8" in cases:
        b8_rows, b8_notes = capture.report_rows(r["b8"])
        out += b8_rows
        notes += b8_notes
    if "B9" in cases:
        b9_rows, b9_notes = managed.report_rows(r["b9"])
        out += b9_rows
        notes += b9_notes
    return out, notes


def report(r: dict[str, Any], sizes: Sizes, cases: frozenset[str]) -> str:
    table, notes = rows(r, sizes, cases)
    lines = ["| id | workload | Stablehand | reference | ratio | target |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    lines.append("")
    if "floor_b2_ms" in r:
        lines.append(f"the same HTTP against a bare aiohttp handler, this run: B2's {2 * sizes.children}"
                     f" requests {r['floor_b2_ms']:.0f} ms; one round trip p50 {r['floor_rtt_ms']:.2f} ms"
                     " (B3 makes two)")
    if "scrape_cpu_ms" in r:
        lines.append(f"a /metrics scrape costs the daemon {r['scrape_cpu_ms']:.2f} ms of CPU"
                     f" ({r['scrape_cpu_ms'] / 100:.1%} of one core at one scrape per 100 ms)")
    lines.append(f"creating one file in the state dir: {r['file_create_us']:.0f} us (median, this run;"
                 " what a start's two output files cost where they are created)")
    lines += notes
    return "\n".join(lines)
