"""`conveyor demo`: the whole release story, unattended, in a temporary directory.

It plays what a team does in a week, in about two minutes: build two services once, promote
the same bytes dev -> staging -> production, ship a healthy v2 under steady load (rolling in
staging, blue-green in production) and then a broken v3 that Conveyor rolls back on its own.
Production asks for one approval (examples/shop): a second person, with a token of their
own, approves each production release as shown on its approval page.
Each step is measured from the outside, the way users see it: a load generator counts every
failed request. The demo drives a real `conveyor server` over its API, like the CLI does, and
stops it (and every instance) at the end, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.cli import render
from conveyor.cli.client import ApiClient
from conveyor.cli.follow import FINAL_PHASES, WAITING_FOR_PEOPLE
from conveyor.cli.publish import build_and_publish
from conveyor.config.loader import load_project
from conveyor.errors import ConveyorError, NotFound
from conveyor.layout import Layout
from conveyor.load.generator import LoadGenerator, LoadReport

SERVICES = ("pricing", "catalog")  # pricing first: catalog's deep readiness needs it


def examples_dir() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / "shop"
        if (candidate / "conveyor.yaml").exists():
            return candidate
    raise NotFound(
        "the example project (examples/shop) is not next to this installation",
        hint="run the demo from a clone of the Conveyor repository",
    )


@dataclass
class Step:
    name: str
    outcome: str = ""
    seconds: float = 0.0
    requests: int = 0
    failed: int = 0
    expected_failures: bool = False
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class LoadThread:
    """A load generator on its own event loop, so the demo's blocking API calls don't stall it."""

    def __init__(self, port: int, rate: float) -> None:
        self.port = port
        self.rate = rate
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.generator = LoadGenerator("127.0.0.1", port, rate=rate, connections=4)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.generator.start(), self.loop).result(10)

    def snapshot(self) -> LoadReport:
        return self.generator.snapshot()

    def stop(self) -> LoadReport:
        report = asyncio.run_coroutine_threadsafe(self.generator.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        return report


class Demo:
    def __init__(self, workdir: Path, quiet: bool) -> None:
        self.root = workdir / "shop"
        self.layout = Layout(self.root)
        self.quiet = quiet
        self.steps: list[Step] = []
        self.client: ApiClient | None = None
        self.reviewer: ApiClient | None = None
        self.loads: dict[str, LoadThread] = {}

    def say(self, text: str) -> None:
        if not self.quiet:
            render.out().print(text)

    # --- setup ------------------------------------------------------------------------

    def prepare(self) -> None:
        shutil.copytree(
            examples_dir(), self.root, ignore=shutil.ignore_patterns(".conveyor", "__pycache__")
        )
        self._git("init", "-q", "-b", "main")
        self._commit("v1: first release of the shop")

    def _git(self, *args: str) -> None:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "Conveyor Demo",
            "GIT_AUTHOR_EMAIL": "demo@conveyor.invalid",
            "GIT_COMMITTER_NAME": "Conveyor Demo",
            "GIT_COMMITTER_EMAIL": "demo@conveyor.invalid",
        }
        with contextlib.suppress(FileNotFoundError):
            subprocess.run(["git", *args], cwd=self.root, env=env, check=True, capture_output=True)

    def _commit(self, message: str) -> None:
        self._git("add", "-A")
        self._git("commit", "-q", "-m", message)

    def start_server(self) -> None:
        from conveyor.server.daemon import up

        project = load_project(self.root / "conveyor.yaml")
        url = up(self.layout, project.file)
        self.client = ApiClient.for_project(self.layout)
        self.say(f"[dim]server up at {render.esc(url)}; project in {render.esc(self.root)}[/]")

    def stop(self) -> None:
        for load in self.loads.values():
            with contextlib.suppress(Exception):
                load.stop()
        self.loads.clear()
        for client in (self.client, self.reviewer):
            if client is not None:
                client.close()
        from conveyor.server.daemon import stop_everything

        stop_everything(self.layout)  # `conveyor down`: the routers outlive the server

    # --- building and releasing -------------------------------------------------------

    def build(self, service: str) -> str:
        assert self.client is not None
        project = load_project(self.root / "conveyor.yaml")
        config = project.config.service(service)
        return build_and_publish(self.client, self.layout, service, config).digest

    def release(
        self, service: str, env: str, artifact: str, overrides: dict[str, str] | None = None
    ) -> dict[str, Any]:
        assert self.client is not None
        created = self.client.post(
            "/api/v1/releases",
            {"service": service, "env": env, "artifact": artifact, "set": overrides or {}},
        )
        if created["phase"] == WAITING_FOR_PEOPLE:
            self.approve(created)
        return self.wait(created)

    def approve(self, release: dict[str, Any]) -> None:
        """A second person approves ``release``, bound to the page they were shown."""
        reviewer = self._reviewer()
        page = reviewer.get(f"/api/v1/approvals/{release['id']}")
        reviewer.post(
            f"/api/v1/approvals/{release['id']}",
            {
                "decision": "approve",
                "comment": "demo: evidence checked",
                "content": page["release"]["content"],
                "page": page["page_hash"],
            },
        )
        self.say(
            f"  [dim]{render.esc(release['name'])} waited for approval; approved by reviewer "
            f"as shown on page {render.short_digest(page['page_hash'])}[/]"
        )

    def _reviewer(self) -> ApiClient:
        """A client with a token of its own: nobody approves what they asked for."""
        if self.reviewer is None:
            assert self.client is not None
            made = self.client.post(
                "/api/v1/tokens",
                {"name": "reviewer", "role": "deployer", "environments": ["*"], "expires_in": 3600},
            )
            self.reviewer = ApiClient(self.client.url, token=made["secret"])
        return self.reviewer

    def wait(self, release: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
        assert self.client is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.client.get(f"/api/v1/releases/{release['id']}")
            if current["phase"] in FINAL_PHASES:
                return dict(current)
            time.sleep(0.2)
        raise ConveyorError(f"{release['name']} did not finish within {timeout:.0f}s")

    def address(self, service: str, env: str) -> int:
        assert self.client is not None
        for row in self.client.get("/api/v1/status", env=env)["services"]:
            if row["service"] == service:
                return int(row["address"].rsplit(":", 1)[1])
        raise NotFound(f"{service} has no address in {env}")

    @contextlib.contextmanager
    def step(
        self, name: str, *, load_on: str | None = None, expected_failures: bool = False
    ) -> Iterator[Step]:
        step = Step(name, expected_failures=expected_failures)
        self.say(f"[bold]▶ {render.esc(name)}[/]")
        before = self.loads[load_on].snapshot() if load_on else None
        started = time.monotonic()
        try:
            yield step
        finally:
            step.seconds = round(time.monotonic() - started, 2)
            if load_on and before is not None:
                after = self.loads[load_on].snapshot()
                step.requests = after.sent - before.sent
                step.failed = after.failed - before.failed
            self.steps.append(step)
            load = f", {step.failed}/{step.requests} requests failed" if load_on else ""
            self.say(f"  {render.esc(step.outcome)} [dim]({step.seconds:.1f}s{load})[/]")

    def bump(self, version: str) -> None:
        for service in SERVICES:
            (self.root / "services" / service / "VERSION").write_text(version + "\n")
        self._commit(f"{version}: new release")

    # --- the story --------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.start_server()
        with self.step("build v1 of both services, once") as s:
            v1 = {svc: self.build(svc) for svc in SERVICES}
            s.outcome = ", ".join(f"{svc} {render.short_digest(d)}" for svc, d in v1.items())
        for env in ("dev", "staging", "production"):
            with self.step(f"deploy v1 to {env}, same bytes") as s:
                phases = [self.release(svc, env, v1[svc])["phase"] for svc in SERVICES]
                s.outcome = ", ".join(f"{svc} {p}" for svc, p in zip(SERVICES, phases, strict=True))
        for env in ("staging", "production"):
            self.loads[env] = LoadThread(self.address("catalog", env), rate=80)
            self.loads[env].start()
        self.bump("v2")
        with self.step("build v2") as s:
            v2 = {svc: self.build(svc) for svc in SERVICES}
            s.outcome = ", ".join(f"{svc} {render.short_digest(d)}" for svc, d in v2.items())
        with self.step("catalog v2 to staging: rolling", load_on="staging") as s:
            s.outcome = self._outcome(self.release("catalog", "staging", v2["catalog"]))
        with self.step("catalog v2 to production: blue-green", load_on="production") as s:
            s.outcome = self._outcome(self.release("catalog", "production", v2["catalog"]))
        self.bump("v3")
        v3 = self.build("catalog")
        for env, fault, title in (
            ("production", {"FAULT_ERROR_RATE": "0.3"}, "30% errors, blue-green"),
            ("staging", {"FAULT_CRASH_AFTER": "2"}, "crashes after 2s, rolling"),
        ):
            with self.step(
                f"broken v3 to {env}: {title}", load_on=env, expected_failures=True
            ) as s:
                started = time.time()
                release = self.release("catalog", env, v3, fault)
                s.outcome = self._outcome(release) + self._time_to_safety(release, env, started)
        with self.step("what runs where") as s:
            assert self.client is not None
            rows = self.client.get("/api/v1/status")["services"]
            s.outcome = ", ".join(f"{r['service']}/{r['env']} r{r['revision']}" for r in rows)
            if not self.quiet:
                console = render.out()
                console.print(render.status_table(rows), width=max(console.width, 140))

    def _time_to_safety(self, release: dict[str, Any], env: str, since: float) -> str:
        """From the first request users saw fail to all traffic back on the old version."""
        assert self.client is not None
        events = self.client.get("/api/v1/events", release=release["id"])["events"]
        restored = [
            e["at"]
            for e in events
            if e["kind"] == "traffic.switched" and e["details"].get("rollback")
        ]
        failures = [t for t in self.loads[env].snapshot().failures_at if t >= since]
        if not restored:
            return "; users never left the old version"
        if not failures:
            return "; no user saw an error"
        seconds = restored[0] - failures[0]
        return f"; first user error -> all traffic on the old version: {seconds:.1f}s"

    def _outcome(self, release: dict[str, Any]) -> str:
        status = release.get("status") or {}
        abort = status.get("abort")
        took = (status.get("finished_at") or 0) - (status.get("started_at") or 0)
        text = f"r{release['revision']} {release['phase']}"
        if abort:
            text += f" on its own ({abort['reason']}: {abort['message']})"
        elif took > 0:
            text += f" in {took:.1f}s"
        return text


def run_demo(*, keep: bool = False, quiet: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-demo-"))
    demo = Demo(workdir, quiet)
    ok = False
    started = time.monotonic()
    try:
        demo.run()
        ok = True
    finally:
        demo.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    report: dict[str, Any] = {
        "ok": ok,
        "seconds": seconds,
        "steps": [s.to_json() for s in demo.steps],
        "workdir": str(workdir) if keep else None,
    }
    if not quiet:
        _print_report(demo.steps, seconds)
    return report


def _print_report(steps: list[Step], seconds: float) -> None:
    from rich.table import Table

    table = Table(title=f"demo report ({seconds:.0f}s)", title_justify="left")
    table.add_column("step", max_width=34)
    table.add_column("what happened", max_width=70)
    table.add_column("took", justify="right")
    table.add_column("failed requests", max_width=22)
    for s in steps:
        failed = "-" if not s.requests else f"{s.failed} of {s.requests}"
        if s.expected_failures and s.requests:
            failed += " (blast radius)"
        table.add_row(render.esc(s.name), render.esc(s.outcome), f"{s.seconds:.1f}s", failed)
    console = render.out()
    console.print(table, width=max(console.width, 140))
