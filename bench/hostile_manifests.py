"""Tally what the manifest loader does with thousands of hostile documents.

    PYTHONPATH=. python bench/hostile_manifests.py --count 12000 --seed 1

Draws documents from `tests/hostile_manifests.py` (the property test's mutations) and reports,
per outcome (loaded, ManifestInvalid, or the exception type that escaped), how many, and the
slowest documents. It imports only `load_manifest`, `ManifestInvalid` and `resolve_inputs`, so
it runs against an older loader too (put that checkout first on PYTHONPATH) for a before/after
comparison. Glob matching runs in a child process with a timeout, because a backtracking
regex cannot be interrupted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.append(str(Path(__file__).parents[1]))  # tests.hostile_manifests, after PYTHONPATH

import manifests.loader
from manifests.loader import ManifestInvalid, load_manifest
from tests.hostile_manifests import FIELD_PATH, FOLDER, MUTATIONS

LOAD_LIMIT_S = 20.0
MATCH_LIMIT_S = 5.0


class _TooSlow(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _TooSlow


def _resolve(data: bytes) -> None:
    from manifests.resolve import resolve_inputs

    try:
        manifest = load_manifest(data)
        resolve_inputs(manifest, set(FOLDER), manifest.output.prefix, 500)
    except BaseException:
        os._exit(1)  # counted by the parent; no traceback on the terminal


def _resolve_outcome(data: bytes) -> str:
    """Match the manifest's inputs against FOLDER in a child process: ok, hang or an error."""
    child = multiprocessing.get_context("fork").Process(target=_resolve, args=(data,))
    child.start()
    child.join(MATCH_LIMIT_S)
    if child.is_alive():
        child.kill()
        child.join()
        return f"resolve over {MATCH_LIMIT_S:g} s"
    return "resolve ok" if child.exitcode == 0 else "resolve raised"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--limit", type=float, default=LOAD_LIMIT_S, help="seconds before a load is stopped"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    names = sorted(MUTATIONS)
    signal.signal(signal.SIGALRM, _alarm)
    outcomes: Counter[str] = Counter()
    by_mutation: Counter[tuple[str, str]] = Counter()
    not_paths: Counter[str] = Counter()
    slow: list[tuple[float, float, str, int]] = []
    over = Counter()
    for i in range(args.count):
        name = names[i % len(names)]
        data = MUTATIONS[name](rng)
        started, cpu = time.perf_counter(), time.process_time()
        signal.setitimer(signal.ITIMER_REAL, args.limit)
        try:
            manifest = load_manifest(data)
            outcome = "loaded"
        except ManifestInvalid as exc:
            outcome = "ManifestInvalid"
            for e in exc.errors:
                if e.field is not None and not FIELD_PATH.fullmatch(e.field):
                    not_paths[e.field[:40]] += 1
        except _TooSlow:
            outcome = f"stopped at {args.limit:g} s"
        except BaseException as exc:
            outcome = type(exc).__name__
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        for limit in (0.5, 1.0, 2.0):
            if elapsed > limit:
                over[limit] += 1
        slow.append((elapsed, cpu, name, len(data)))
        outcomes[outcome] += 1
        by_mutation[(name, outcome)] += 1
        if outcome == "loaded" and any(c in str(manifest.inputs) for c in "*?["):
            outcomes[_resolve_outcome(data)] += 1
    slow.sort(reverse=True)
    print(f"loader: {manifests.loader.__file__}")
    print(f"documents: {args.count} (seed {args.seed}), {len(names)} mutations")
    for outcome, count in outcomes.most_common():
        print(f"  {outcome:28} {count}")
    print("escaped exceptions by mutation:")
    for (name, outcome), count in sorted(by_mutation.items()):
        if outcome not in ("loaded", "ManifestInvalid"):
            print(f"  {name:16} {outcome:24} {count}")
    print(f"error fields that are not field paths: {sum(not_paths.values())}")
    for field, count in not_paths.most_common(8):
        print(f"  {field!r:44} {count}")
    print("documents over 0.5 / 1 / 2 s: " + " / ".join(str(over[x]) for x in (0.5, 1.0, 2.0)))
    print("slowest (wall, CPU):")
    for wall, cpu, name, size in slow[:5]:
        print(f"  {wall:.3f} s, {cpu:.3f} s CPU  {name}, {size} B")
    print(f"most CPU: {max(s[1] for s in slow):.3f} s")


if __name__ == "__main__":
    main()
