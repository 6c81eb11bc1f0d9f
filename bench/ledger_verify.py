"""Ledger verification: the whole chain against "from the last signed checkpoint".

Run: .venv/bin/python bench/ledger_verify.py [--sizes 100000 1000000] [--runs 3]

For each size a SQLite ledger is written through the real store (``Store.append_events``,
batches of 5000 events shaped like a rollout's: kind, service, env, release, a few details),
with a checkpoint signed by the real keyring every 1000 events -- what the server's default
policy leaves -- the newest one 1000 events behind the head: the most a server has to read
at start under that policy. Then, through ``Ledger.verify`` (what the server at start and
``GET /api/v1/ledger/verify`` run: trusted keys read, every checkpoint's signature checked):

  full             from genesis, every event re-hashed, every checkpoint opened;
  from checkpoint  from the newest checkpoint that verifies to the head.

Medians of ``--runs``; raw runs in bench/results/ledger_verify.json (gitignored). The
databases are kept in bench/results/ (``--rebuild`` writes them again).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from conveyor.application.ledger import Ledger  # noqa: E402
from conveyor.application.notary import KeyringNotary  # noqa: E402
from conveyor.artifacts.signing import Keyring  # noqa: E402
from conveyor.store import NewEvent, Store  # noqa: E402
from conveyor.store.ledger import (  # noqa: E402
    CHECKPOINT_PAYLOAD_TYPE,
    checkpoint_statement,
    read_checkpoint,
)

RESULTS = REPO / "bench" / "results"
BATCH = 5000
EVERY = 1000
KINDS = ("instances.started", "instance.ready", "traffic.shifted", "step.completed")


class Clock:
    """Events a tenth of a second apart, so times grow as in a real ledger."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 0.1
        return self.now


def build(path: Path, size: int, notary: KeyringNotary) -> None:
    """A ledger of ``size`` events with a checkpoint every EVERY events, the last EVERY behind."""
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    with Store.open(f"sqlite:///{path}", clock=Clock()) as store:
        written = 0
        while written < size:
            n = min(BATCH, size - written)
            batch = [
                NewEvent(
                    KINDS[(written + i) % len(KINDS)],
                    {"step": (written + i) % 7, "weight": 20, "ready": 2, "desired": 2},
                    service=f"svc-{(written + i) % 14}",
                    env="production",
                    release_id=(written + i) // 50 + 1,
                )
                for i in range(n)
            ]
            events = store.append_events(batch, actor="conveyor")
            for event in events:
                if event.seq % EVERY == 0 and event.seq <= size - EVERY:
                    payload = checkpoint_statement(event.seq, event.hash, event.at)
                    envelope = notary.sign(CHECKPOINT_PAYLOAD_TYPE, payload)
                    claim = read_checkpoint(*notary.opener(CHECKPOINT_PAYLOAD_TYPE)(envelope))
                    store.record_checkpoint(claim, envelope, reason="interval")
            written += n
    print(f"  wrote {size:,} events in {time.perf_counter() - started:.1f} s ({path.name})")


def measure(path: Path, notary: KeyringNotary, runs: int) -> dict[str, object]:
    with Store.open(f"sqlite:///{path}") as store:
        ledger = Ledger(store, notary, time.time)
        times: dict[str, list[float]] = {"full": [], "from_checkpoint": []}
        checked: dict[str, int] = {}
        for _ in range(runs):  # alternate, so drift on the machine hits both alike
            for mode in ("full", "from_checkpoint"):
                began = time.perf_counter()
                check = ledger.verify(full=mode == "full")
                times[mode].append(time.perf_counter() - began)
                assert check.ok, check
                checked[mode] = check.checked
        head = store.ledger_head()[0]
        checkpoints = len(store.checkpoints(limit=10**7))
    return {
        "events": head,
        "checkpoints": checkpoints,
        "runs": times,
        "median": {mode: statistics.median(values) for mode, values in times.items()},
        "checked": checked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = RESULTS / "ledger-keys"
    notary = KeyringNotary(Keyring(keys))
    results = []
    for size in args.sizes:
        path = RESULTS / f"ledger-{size}.db"
        if args.rebuild or not path.exists():
            build(path, size, notary)
        results.append(measure(path, notary, args.runs))
    print(f"\nPython {platform.python_version()}, SQLite, medians of {args.runs}\n")
    print("| events    | checkpoints | full         | from checkpoint | events read | ratio |")
    print("|----------:|------------:|-------------:|----------------:|------------:|------:|")
    for r in results:
        med: dict[str, float] = r["median"]  # type: ignore[assignment]
        read: dict[str, int] = r["checked"]  # type: ignore[assignment]
        print(
            f"| {r['events']:>9,} | {r['checkpoints']:>11,} | {med['full']:>10.2f} s "
            f"| {med['from_checkpoint'] * 1000:>12.1f} ms | {read['from_checkpoint']:>11,} "
            f"| {med['full'] / med['from_checkpoint']:>4.0f}x |"
        )
    (RESULTS / "ledger_verify.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
