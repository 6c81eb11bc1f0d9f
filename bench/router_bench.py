"""Built-in router vs HAProxy vs no proxy at all, on the same backend, with wrk.

Run: .venv/bin/python bench/router_bench.py [--rounds 5] [--duration 8] [--connections 32]
                                             [--baseline-src OTHER/src] [--browser-headers]
                                             [--workers 2]

Every path talks to the SAME backend process (bench/_backend.py: uvloop + httptools, two
listeners standing for two versions). Paths:

  direct            wrk -> backend (one listener): the ceiling
  relay floor       wrk -> a bare uvloop byte relay (bench/_relay_floor.py, not an HTTP
                    proxy) -> v1: what the socket work alone costs a Python process
  router 50/50      wrk -> built-in router (own process, uvloop) -> both versions
  haproxy-1t 50/50  wrk -> HAProxy, nbthread 1 (a fair match: the router is single-threaded)
  haproxy-mt 50/50  wrk -> HAProxy, nbthread 2 (or --workers N)
  router-2w 50/50   wrk -> the router process with worker processes (--workers, default 2),
                    started as servers start it (python -m conveyor.traffic.builtin.daemon
                    --workers N) and given its route over the control socket: the match for
                    haproxy-mt. Its CPU per request is the sum over all its processes
  router-py 50/50   the same router with its hot path interpreted (CONVEYOR_ROUTER_ACCEL=off),
                    when a compiled build is in use (docs/router.md "A compiled hot path")
  router 95/5       canary-like split
  haproxy-1t 95/5
  base 50/50, 95/5  with --baseline-src: the router imported from another source tree (say
                    an export of the previous commit), for a before/after in the same run

Rounds alternate the paths so that drift on a shared machine hits all of them alike; the
table reports medians over rounds, plus the proxy process' CPU time per request (from
/proc), which is less sensitive to other load on the box than throughput is. Raw rounds go
to bench/results/router.json (gitignored).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from conveyor.core.model import Backend, Pool, RouteTable
from conveyor.traffic.builtin import accel, control
from conveyor.traffic.builtin.client import Connection
from conveyor.traffic.builtin.files import RouterPaths, read_secret

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "router.json"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _spawn(
    args: list[str], port: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        _wait_listening(port)
    except RuntimeError:
        proc.kill()
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise RuntimeError(f"{args[0]} did not start: {stderr}") from None
    return proc


def _haproxy_config(port: int, backends: list[tuple[str, int, int]], threads: int | None) -> str:
    servers = "\n".join(
        f"    server {name} 127.0.0.1:{backend_port} weight {weight}"
        for name, backend_port, weight in backends
    )
    nbthread = f"    nbthread {threads}\n" if threads else ""
    return (
        "global\n"
        f"{nbthread}"
        "    maxconn 4000\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 2s\n"
        "    timeout client 30s\n"
        "    timeout server 30s\n"
        "    option http-keep-alive\n"
        "    http-reuse always\n"
        "frontend fe\n"
        f"    bind 127.0.0.1:{port}\n"
        "    default_backend be\n"
        "backend be\n"
        "    balance roundrobin\n"
        f"{servers}\n"
    )


@dataclass
class Round:
    path: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float | None


def _summarise(mine: list[Round]) -> Round:
    """Medians over the rounds of one path (errors are summed: any error matters)."""
    cpu = [r.cpu_us_per_request for r in mine if r.cpu_us_per_request is not None]
    return Round(
        mine[0].path,
        statistics.median(r.requests_per_s for r in mine),
        statistics.median(r.p50_ms for r in mine),
        statistics.median(r.p99_ms for r in mine),
        sum(r.errors for r in mine),
        statistics.median(cpu) if cpu else None,
    )


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _latency_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no {percentile}% line in wrk output:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BROWSER_HEADERS = (
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36",
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language: en-US,en;q=0.9",
    "Accept-Encoding: gzip, deflate, br",
    "Cookie: " + "session=abcdef0123456789; " * 16,
)
"""About 700 bytes of head, as a browser sends: past the size below which the router does
not inspect a head, so ``--browser-headers`` measures what its limits cost per request."""

_HEADERS: list[str] = []


def _run_wrk(path: str, port: int, duration: float, connections: int, pids: list[int]) -> Round:
    """One wrk run; CPU per request is that of every process in ``pids`` (the proxy's)."""
    cpu_before = sum(_cpu_seconds(pid) for pid in pids)
    out = subprocess.run(
        [
            WRK,
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            *(arg for header in _HEADERS for arg in ("-H", header)),
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu_before if pids else None
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    ):
        errors += sum(int(g) for g in match.groups())
    return Round(
        path,
        rps,
        _latency_ms(out, "50"),
        _latency_ms(out, "99"),
        errors,
        cpu / total * 1e6 if cpu is not None and total else None,
    )


def _versions_seen(port: int, requests: int = 400) -> dict[str, int]:
    """Sanity check that a proxy really splits between the two versions."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen: dict[str, int] = {}
    for _ in range(requests):
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        version = response.getheader("X-Version") or "?"
        seen[version] = seen.get(version, 0) + 1
    conn.close()
    return dict(sorted(seen.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run the router imported from this src/ directory, labelled 'base'",
    )
    parser.add_argument(
        "--browser-headers", action="store_true", help="send a browser's ~700-byte head"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes of router-Nw and threads of haproxy-mt (default 2)",
    )
    args = parser.parse_args()
    if args.browser_headers:
        _HEADERS.extend(BROWSER_HEADERS)

    python = sys.executable
    v1, v2 = _free_port(), _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    try:
        backend = _spawn([python, str(BENCH / "_backend.py"), f"{v1}:v1", f"{v2}:v2"], v1)
        procs.append(backend)
        paths: dict[str, tuple[int, list[int]]] = {"direct": (v1, [])}

        def router(
            label: str, w1: int, w2: int, src: Path | None = None, interpreted: bool = False
        ) -> None:
            port = _free_port()
            env = None if src is None else {**os.environ, "PYTHONPATH": str(src.resolve())}
            if interpreted:  # the same router without its compiled hot path (accel.py)
                env = {**(env or os.environ), "CONVEYOR_ROUTER_ACCEL": "off"}
            proc = _spawn(
                [
                    python,
                    str(BENCH / "_router_server.py"),
                    str(port),
                    f"v1:{w1}:{v1}",
                    f"v2:{w2}:{v2}",
                ],
                port,
                env,
            )
            procs.append(proc)
            paths[label] = (port, [proc.pid])

        def router_workers(label: str, w1: int, w2: int) -> None:
            """The router process itself with --workers, driven over its control socket."""
            port = _free_port()
            state = tmp / label.replace("/", "-").replace(" ", "-")
            router_paths = RouterPaths.of(state).ensure()
            secret = read_secret(router_paths, create=True)
            command = [python, "-m", "conveyor.traffic.builtin.daemon", "--state", str(state)]
            proc = subprocess.Popen(
                [*command, "--workers", str(args.workers)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn = Connection(router_paths, secret, timeout=10)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"no router process ({proc.poll()})") from None
                    time.sleep(0.05)
            pools = (
                Pool("v1", w1, (Backend("v1-0", "127.0.0.1", v1),)),
                Pool("v2", w2, (Backend("v2-0", "127.0.0.1", v2),)),
            )
            table = RouteTable(pools=pools, stable_version="v1")  # as _router_server does
            route = {"service": "bench", "env": "bench"}
            for message in (
                {"op": "apply", **route, "table": control.table_to_wire(table)},
                {"op": "serve", **route, "host": "127.0.0.1", "port": port, "preview_port": None},
            ):
                answer = conn.call(message)
                if not answer.get("ok"):
                    raise RuntimeError(f"the router process refused {message['op']}: {answer}")
            pids = [int(pid) for pid in conn.call({"op": "ping"})["worker_pids"]]
            conn.close()
            if len(pids) != args.workers:
                raise RuntimeError(f"expected {args.workers} router processes, got {pids}")
            paths[label] = (port, pids)

        def haproxy(label: str, w1: int, w2: int, threads: int | None) -> None:
            port = _free_port()
            config = tmp / f"{label.replace('/', '-')}.cfg"
            config.write_text(_haproxy_config(port, [("v1", v1, w1), ("v2", v2, w2)], threads))
            proc = _spawn([HAPROXY, "-db", "-f", str(config)], port)
            procs.append(proc)
            paths[label] = (port, [proc.pid])

        floor = _free_port()
        relay = _spawn([python, str(BENCH / "_relay_floor.py"), str(floor), str(v1)], floor)
        procs.append(relay)
        paths["relay floor"] = (floor, [relay.pid])
        router("router 50/50", 50, 50)
        if accel.active() is not None:
            router("router-py 50/50", 50, 50, interpreted=True)
        if args.baseline_src:
            router("base 50/50", 50, 50, args.baseline_src)
        haproxy("haproxy-1t 50/50", 50, 50, 1)
        haproxy("haproxy-mt 50/50", 50, 50, args.workers)
        router_workers(f"router-{args.workers}w 50/50", 50, 50)
        router("router 95/5", 95, 5)
        if args.baseline_src:
            router("base 95/5", 95, 5, args.baseline_src)
        haproxy("haproxy-1t 95/5", 95, 5, 1)

        split = {
            label: _versions_seen(port)
            for label, (port, _) in paths.items()
            if label not in ("direct", "relay floor")
        }
        hot_path = "compiled (mypyc)" if accel.active() is not None else "interpreted"
        print(f"the router's hot path: {hot_path}")
        print("versions seen over 400 requests:", json.dumps(split))
        for label, (port, pids) in paths.items():  # warm-up: connections, caches, JIT-less paths
            _run_wrk(label, port, 2, args.connections, pids)

        rounds: list[Round] = []
        labels = list(paths)
        for number in range(args.rounds):
            order = labels if number % 2 == 0 else labels[::-1]
            for label in order:
                port, pids = paths[label]
                result = _run_wrk(label, port, args.duration, args.connections, pids)
                rounds.append(result)
                print(
                    f"round {number + 1} {label:18} {result.requests_per_s:10.0f} req/s "
                    f"p50 {result.p50_ms:6.3f} ms p99 {result.p99_ms:6.3f} ms "
                    f"errors {result.errors}",
                    flush=True,
                )

        summary = {label: _summarise([r for r in rounds if r.path == label]) for label in labels}
        ratios: dict[str, dict[str, float]] = {}
        for split_label in ("50/50", "95/5"):
            ours, theirs = summary[f"router {split_label}"], summary[f"haproxy-1t {split_label}"]
            ratios[split_label] = {
                "throughput_router_over_haproxy_1t": ours.requests_per_s / theirs.requests_per_s,
                "p99_router_over_haproxy_1t": ours.p99_ms / theirs.p99_ms,
            }
            if ours.cpu_us_per_request and theirs.cpu_us_per_request:
                ratios[split_label]["cpu_per_request_router_over_haproxy_1t"] = (
                    ours.cpu_us_per_request / theirs.cpu_us_per_request
                )
            base = summary.get(f"base {split_label}")
            if base is not None:
                ratios[split_label]["throughput_router_over_base"] = (
                    ours.requests_per_s / base.requests_per_s
                )
                if ours.cpu_us_per_request and base.cpu_us_per_request:
                    ratios[split_label]["cpu_per_request_router_over_base"] = (
                        ours.cpu_us_per_request / base.cpu_us_per_request
                    )
        interpreted = summary.get("router-py 50/50")
        one_thread = summary["haproxy-1t 50/50"]
        if interpreted and interpreted.cpu_us_per_request and one_thread.cpu_us_per_request:
            ratios["50/50"]["cpu_per_request_router_py_over_haproxy_1t"] = (
                interpreted.cpu_us_per_request / one_thread.cpu_us_per_request
            )
        mt = summary["haproxy-mt 50/50"]
        workers = summary[f"router-{args.workers}w 50/50"]
        ratios["50/50"]["throughput_router_over_haproxy_mt"] = (
            summary["router 50/50"].requests_per_s / mt.requests_per_s
        )
        ratios["50/50"]["throughput_router_workers_over_haproxy_mt"] = (
            workers.requests_per_s / mt.requests_per_s
        )
        ratios["50/50"]["throughput_router_workers_over_router"] = (
            workers.requests_per_s / summary["router 50/50"].requests_per_s
        )
        if workers.cpu_us_per_request and mt.cpu_us_per_request:
            ratios["50/50"]["cpu_per_request_router_workers_over_haproxy_mt"] = (
                workers.cpu_us_per_request / mt.cpu_us_per_request
            )

        print()
        print(
            f"medians over {args.rounds} rounds, wrk -t1 -c{args.connections} -d{args.duration:g}s"
        )
        header = ("path", "req/s", "p50 ms", "p99 ms", "errors", "CPU us/req")
        print("{:18} {:>10} {:>8} {:>8} {:>7} {:>11}".format(*header))
        for label, row in summary.items():
            cpu = row.cpu_us_per_request
            cpu_text = f"{cpu:11.1f}" if cpu is not None else " " * 11
            print(
                f"{label:18} {row.requests_per_s:10.0f} {row.p50_ms:8.3f} "
                f"{row.p99_ms:8.3f} {row.errors:7d} {cpu_text}"
            )
        print()
        for split_label, values in ratios.items():
            text = ", ".join(f"{key} {value:.2f}" for key, value in values.items())
            print(f"{split_label}: {text}")

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {
                    "command": " ".join([Path(python).name, *sys.argv]),
                    "baseline_src": str(args.baseline_src) if args.baseline_src else None,
                    "wrk": f"-t1 -c{args.connections} -d{args.duration:g}s --latency",
                    "browser_headers": args.browser_headers,
                    "workers": args.workers,
                    "hot_path": hot_path,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "haproxy": subprocess.run(
                            [HAPROXY, "-v"], capture_output=True, text=True, check=False
                        ).stdout.splitlines()[0],
                    },
                    "versions_seen": split,
                    "summary": {label: asdict(row) for label, row in summary.items()},
                    "ratios": ratios,
                    "rounds": [asdict(r) for r in rounds],
                },
                indent=2,
            )
        )
        print(f"\nwrote {RESULTS}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
