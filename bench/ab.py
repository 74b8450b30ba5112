"""``python -m bench.ab OLD_REV NEW_REV [--rounds N] [--cases B1,B4] [bench options...]``

Compare two revisions on this machine, in one session, alternating: old, new,
old, new... so that the machine's drift (its speed moves two- to threefold
within a day) falls on both sides alike. Absolute figures from different runs
never compare; these do.

Each revision is extracted with ``git archive REV | tar -x`` into a temp dir
(``.`` stands for the working tree as it is, uncommitted changes included: the
files ``git ls-files`` knows, copied once at the start). Every run is
``python -m bench --cases ...`` started from that tree's directory, so the
daemon (and keeper) measured are that tree's (the bench starts ``python -m
daemon`` from its cwd). The measuring side is the same for both: the trees'
own ``bench/`` is removed, and this ``bench`` package, copied once, is found
through ``PYTHONPATH`` instead. Options this runner does not know (``--quick``,
``--b8-bytes 64M``, ``--dir``) go to every bench run as they are.

The report gives, per figure, each side's median with its range, the ratio of
the medians new/old, and the range of the per-round ratios (round i's new over
round i's old): a ratio whose range straddles 1 is noise at this many rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.sizes import parse_cases

BENCH_DIR = Path(__file__).resolve().parent
Getter = Callable[[dict[str, Any]], float]

# Per case: (figure, how to read it from a run's JSON, True if higher is better).
FIGURES: dict[str, list[tuple[str, Getter, bool]]] = {
    "B1": [("B1 start ms", lambda r: r["b1_ms"], False),
           ("B1 x raw", lambda r: r["b1_ms"] / r["raw"]["spawn_ms"], False)],
    "B2": [("B2 kill ms", lambda r: r["b2_ms"], False),
           ("B2 x raw", lambda r: r["b2_ms"] / r["raw"]["kill_ms"], False)],
    "B3": [("B3 p50 ms", lambda r: r["b3_p50_ms"], False), ("B3 p99 ms", lambda r: r["b3_p99_ms"], False)],
    "B4": [("B4 /s", lambda r: r["b4_per_s"], True),
           ("B4 of raw", lambda r: r["b4_per_s"] / r["raw"]["churn_per_s"], True)],
    "B5": [("B5 /s", lambda r: r["b5_per_s"], True),
           ("B5 of bare", lambda r: r["b5_per_s"] / r["bare_rate"], True),
           ("B5+ of B5", lambda r: r["b5_scraped_per_s"] / r["b5_per_s"], True)],
    "B6": [("B6 start-up s", lambda r: r["b6_startup_s"], False),
           ("B6 list ms", lambda r: r["b6_list_ms"], False),
           ("B6 create x empty", lambda r: r["b6_create_ms"] / r["empty_create_ms"], False)],
    "B7": [("B7 idle RSS MiB", lambda r: r["b7"]["idle"]["rss_kib"] / 1024, False),
           ("B7 KiB per child", lambda r: (r["b7"]["loaded"]["rss_kib"] - r["b7"]["before"]["rss_kib"])
            / r["b7"]["children"], False),
           ("B7k keeper idle RSS MiB", lambda r: r["b7_keeper"]["idle"]["rss_kib"] / 1024, False),
           ("B7k keeper KiB per child", lambda r: r["b7_keeper"]["rss_kib_per_child"], False)],
    "B8": [("B8 MB/s", lambda r: r["b8"]["bytes"] / r["b8"]["kept"]["seconds"] / 1e6, True),
           ("B8 of file", lambda r: r["b8"]["floor_s"] / r["b8"]["kept"]["seconds"], True),
           ("B8 /healthz p99 ms", lambda r: r["b8"]["kept"]["healthz_p99_ms"], False),
           ("B8+ disk peak MiB", lambda r: max(r["b8"]["capped"]["disk_peak"].values()) / (1 << 20), False),
           ("B8+ /healthz p99 ms", lambda r: r["b8"]["capped"]["healthz_p99_ms"], False)],
    "B9": [("B9 core, managed", lambda r: r["b9"]["managed"]["core"], False),
           ("B9 core, unmanaged", lambda r: r["b9"]["floor"]["core"], False),
           ("B9 core, difference", lambda r: r["b9"]["managed"]["core"] - r["b9"]["floor"]["core"], False),
           ("B9 /healthz p99 ms", lambda r: r["b9"]["managed"]["healthz_p99_ms"], False)],
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def extract(repo: Path, rev: str, into: Path) -> str:
    """The tree of ``rev`` (``.``: the working tree) in ``into``, without its bench/; returns its name."""
    into.mkdir(parents=True)
    if rev == ".":
        listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], check=True, capture_output=True).stdout
        for name in filter(None, listed.decode().split("\0")):
            source = repo / name
            if source.is_file():   # a tracked file deleted in the working tree is left out
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, into / name)
        described = f"working tree on {git(repo, 'rev-parse', '--short', 'HEAD')}"
    else:
        sha = git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
        archive = subprocess.Popen(["git", "-C", str(repo), "archive", sha], stdout=subprocess.PIPE)
        assert archive.stdout is not None
        subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
        archive.stdout.close()
        if archive.wait() != 0:
            raise RuntimeError(f"git archive {sha} failed")
        described = f"{sha[:10]} {git(repo, 'log', '-1', '--format=%s', sha)[:60]}"
    shutil.rmtree(into / "bench", ignore_errors=True)
    return described


def run_bench(python: str, tree: Path, instrument: Path, cases: str, extra: list[str],
              out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(instrument), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([python, "-m", "bench", "--cases", cases, "--json-out", str(out), *extra],
                            cwd=tree, env=env, capture_output=True, text=True)
    out.with_suffix(".txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"bench failed in {tree} (exit {result.returncode}):\n{result.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _figure(getter: Getter, run: dict[str, Any]) -> float | None:
    try:
        return float(getter(run))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None   # not measured in this revision (say, no keeper)


def _range(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


def report(cases: frozenset[str], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> str:
    lines = ["| figure | old median (range) | new median (range) | new/old | per-round new/old | verdict |",
             "|---|---|---|---|---|---|"]
    for case in sorted(cases):
        for name, getter, higher_better in FIGURES[case]:
            pairs = [(_figure(getter, a), _figure(getter, b)) for a, b in zip(old, new, strict=False)]
            olds = [a for a, _ in pairs if a is not None]
            news = [b for _, b in pairs if b is not None]
            if not olds or not news:
                lines.append(f"| {name} | {_cell(olds)} | {_cell(news)} | | | not measured on both |")
                continue
            ratio = statistics.median(news) / statistics.median(olds)
            per_round = [b / a for a, b in pairs if a and b is not None]
            worse = (1 / ratio if higher_better else ratio) - 1
            verdict = f"{abs(worse):.0%} {'worse' if worse > 0 else 'better'}"
            lines.append(f"| {name} | {_cell(olds)} | {_cell(news)} | {ratio:.3f} |"
                         f" {_range(per_round) if per_round else ''} | {verdict} |")
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} ({_range(values)})" if values else "—"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", metavar="OLD_REV", help="a git revision, or . for the working tree")
    parser.add_argument("new", metavar="NEW_REV", help="a git revision, or . for the working tree")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--cases", default="B1,B4", help="bench cases to run (default B1,B4)")
    parser.add_argument("--repo", type=Path, default=BENCH_DIR.parent,
                        help="the git checkout (default: this one)")
    parser.add_argument("--python", help="the interpreter (default: the checkout's .venv, else this one)")
    parser.add_argument("--keep", action="store_true", help="keep the trees and each run's output")
    args, extra = parser.parse_known_args(argv)
    try:
        cases = parse_cases(args.cases)
    except ValueError as exc:
        parser.error(str(exc))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    repo = Path(git(args.repo, "rev-parse", "--show-toplevel"))
    venv_python = repo / ".venv" / "bin" / "python"
    python = args.python or (str(venv_python) if venv_python.exists() else sys.executable)
    workdir = Path(tempfile.mkdtemp(prefix="stablehand-ab-"))
    try:
        instrument = workdir / "instrument"
        shutil.copytree(BENCH_DIR, instrument / "bench", ignore=shutil.ignore_patterns("__pycache__"))
        sides = {"old": workdir / "old", "new": workdir / "new"}
        names = {"old": extract(repo, args.old, sides["old"]), "new": extract(repo, args.new, sides["new"])}
        results: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
        for n in range(args.rounds):
            for side in ("old", "new"):
                began = time.monotonic()
                results[side].append(run_bench(python, sides[side], instrument, ",".join(sorted(cases)),
                                               extra, workdir / f"{side}-{n + 1}.json"))
                print(f"round {n + 1}/{args.rounds} {side}: {time.monotonic() - began:.0f} s",
                      file=sys.stderr)
        print(f"old: {args.old} = {names['old']}\nnew: {args.new} = {names['new']}")
        print(f"{args.rounds} rounds, alternating old/new; cases {','.join(sorted(cases))};"
              f" bench options: {' '.join(extra) or '(none)'}; {os.cpu_count()} cores\n")
        print(report(cases, results["old"], results["new"]))
        if args.keep:
            print(f"\ntrees and each run's output: {workdir}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
