"""Router CPU per request: in the server's process (before) vs its own process (after).

Run: .venv/bin/python bench/router_process_bench.py [--rounds 5] [--duration 8]
                                                   [--connections 32]

Same backend, same wrk, same 95/5 split, alternating rounds (see router_bench.py, whose
helpers this reuses). Paths:

  in-process   the router on a server-like process's loop, read by a driver-like task
               every 100 ms (bench/_router_modes.py inproc): how `conveyor server` ran it
  process      the router process, started and read every 100 ms over its control socket
               by a server-like client process (bench/_router_modes.py process): how it
               runs now; ``control`` is the client process's CPU per request, i.e. what the
               reads cost on the server's side
  haproxy-1t   HAProxy, nbthread 1, for reference, measured in the same run

CPU per request is the router process's user+system time over the round divided by the
requests wrk completed (from /proc), less sensitive to the shared machine than req/s.
Raw rounds go to bench/results/router_process.json (gitignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "src"))

import router_bench as rb  # noqa: E402

from conveyor.traffic.builtin.client import stop_router  # noqa: E402

RESULTS = BENCH / "results" / "router_process.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    python = sys.executable
    v1, v2 = rb._free_port(), rb._free_port()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="router-process-bench-"))
    paths: dict[str, tuple[int, int, int | None]] = {}  # label -> port, router pid, client pid
    try:
        procs.append(rb._spawn([python, str(BENCH / "_backend.py"), f"{v1}:v1", f"{v2}:v2"], v1))
        for mode, label in (("inproc", "in-process"), ("process", "process")):
            port = rb._free_port()
            proc = subprocess.Popen(
                [
                    python,
                    str(BENCH / "_router_modes.py"),
                    mode,
                    str(port),
                    str(tmp / mode),
                    f"v1:95:{v1}",
                    f"v2:5:{v2}",
                ],
                stdout=subprocess.PIPE,
                # its own session, as `conveyor up` starts the server and the server the
                # router process: with autogroup scheduling, sessions share CPU as groups
                start_new_session=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            ready = proc.stdout.readline().split()
            router_pid = int(ready[1])
            paths[label] = (port, router_pid, proc.pid if mode == "process" else None)
        port = rb._free_port()
        config = tmp / "haproxy.cfg"
        config.write_text(rb._haproxy_config(port, [("v1", v1, 95), ("v2", v2, 5)], 1))
        haproxy = rb._spawn([rb.HAPROXY, "-db", "-f", str(config)], port)
        procs.append(haproxy)
        paths["haproxy-1t"] = (port, haproxy.pid, None)

        print("versions seen:", {k: rb._versions_seen(p) for k, (p, _, _) in paths.items()})
        for label, (port, pid, _) in paths.items():
            rb._run_wrk(label, port, 2, args.connections, pid)

        rounds: list[dict[str, float | str | None]] = []
        labels = list(paths)
        for number in range(args.rounds):
            for label in labels if number % 2 == 0 else labels[::-1]:
                port, pid, client = paths[label]
                client_before = rb._cpu_seconds(client) if client else 0.0
                result = rb._run_wrk(label, port, args.duration, args.connections, pid)
                control = None
                if client:
                    total = result.requests_per_s * args.duration
                    control = (rb._cpu_seconds(client) - client_before) / total * 1e6
                rounds.append(
                    {
                        "path": label,
                        "rps": result.requests_per_s,
                        "p99_ms": result.p99_ms,
                        "errors": result.errors,
                        "cpu_us": result.cpu_us_per_request,
                        "control_us": control,
                    }
                )
                print(
                    f"round {number + 1} {label:11} {result.requests_per_s:8.0f} req/s "
                    f"CPU {result.cpu_us_per_request or 0:5.1f} us/req"
                    + (f" + control {control:5.2f} us/req" if control is not None else ""),
                    flush=True,
                )

        def median(label: str, key: str) -> float | None:
            values = [r[key] for r in rounds if r["path"] == label and r[key] is not None]
            return statistics.median(values) if values else None  # type: ignore[type-var]

        print(f"\nmedians over {args.rounds} rounds, wrk -t1 -c{args.connections}, 95/5 split")
        print(f"{'path':11} {'req/s':>8} {'p99 ms':>7} {'CPU us/req':>11} {'control us/req':>15}")
        summary = {}
        for label in labels:
            row = {k: median(label, k) for k in ("rps", "p99_ms", "cpu_us", "control_us")}
            summary[label] = row
            control = row["control_us"]
            print(
                f"{label:11} {row['rps'] or 0:8.0f} {row['p99_ms'] or 0:7.3f} "
                f"{row['cpu_us'] or 0:11.1f} {'' if control is None else f'{control:15.2f}'}"
            )
        before, after = summary["in-process"]["cpu_us"], summary["process"]["cpu_us"]
        haproxy_cpu = summary["haproxy-1t"]["cpu_us"]
        if before and after and haproxy_cpu:
            print(
                f"\nrouter CPU per request, own process / in-process: {after / before:.2f}; "
                f"vs HAProxy 1t: in-process {before / haproxy_cpu:.2f}x, "
                f"own process {after / haproxy_cpu:.2f}x"
            )
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
        print(f"wrote {RESULTS}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        stop_router(tmp / "process")


if __name__ == "__main__":
    main()
