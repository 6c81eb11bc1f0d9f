"""`conveyor doctor`: what this host and this project say about isolation, checked locally.

It needs no server and changes nothing, so it can be run before `conveyor up`, on a broken
install, or on a CI machine that only runs pipelines. It answers the questions a security
review asks first, and the ones that make a first start fail:

- who runs (or would run) the server, and whether the code it starts runs as someone else
  (``run_as``) — as root without it, that code can read ``.conveyor/`` (the state, the
  admin token, the keys), and attestations are only as strong as root's isolation;
- whether each ``run_as`` user exists, whether the server may become it, and whether it can
  reach its unpacked trees at all (every directory above the project must be searchable);
- whether anything under ``.conveyor/`` is readable by others (an earlier version's files,
  which the server tightens at its next start);
- whether the optional tools are installed: HAProxy (``router: haproxy``), Prometheus and
  promtool (the Prometheus provider and SLO rules).

``gather`` does the looking (files, the password database, PATH); ``diagnose`` turns the
facts into checks and is pure, so it is tested with tables. A check is ``ok``, ``warn`` or
``fail``; any ``fail`` exits 1.
"""

from __future__ import annotations

import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.errors import ConveyorError
from conveyor.layout import Layout, tighten
from conveyor.run_as import (
    CREATE_HINT,
    SEARCH,
    CannotSwitch,
    User,
    barrier,
    current,
    require,
    root_warning,
)

Status = Literal["ok", "warn", "fail"]
TOOLS = {
    "haproxy": "environments with `router: haproxy`",
    "prometheus": "the Prometheus metric provider (and its tests)",
    "promtool": "checking the SLO rules `conveyor slo rules` writes",
}
SHOWN = 5


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    hint: str | None = None


@dataclass(frozen=True)
class RunAsFacts:
    """One ``run_as`` value as this host sees it."""

    value: str
    used_by: tuple[str, ...]
    problem: str | None = None  # missing, or the server may not become it
    blocked: str | None = None  # why it cannot reach the project's .conveyor/


@dataclass(frozen=True)
class Facts:
    server: User
    server_pid: int | None  # a running server's pid; None: `conveyor up` from here
    config_problem: str | None = None
    services: Mapping[str, str | None] = field(default_factory=dict)  # service -> run_as
    jobs: tuple[str | None, ...] = ()  # the pipeline's run_as; empty: no pipeline
    run_as: tuple[RunAsFacts, ...] = ()
    state_mode: int | None = None  # None: no .conveyor/ yet
    loose: tuple[str, ...] = ()
    tools: Mapping[str, str | None] = field(default_factory=dict)


def diagnose(facts: Facts) -> list[Check]:
    """The checks ``facts`` imply, in the order a reader should meet them."""
    server = facts.server
    who = f"{server.name} (uid {server.uid})"
    if facts.server_pid is not None:
        running = f"the server (pid {facts.server_pid}) runs as {who}"
    else:
        running = f"no server is running; `conveyor up` here would run it as {who}"
    checks = [Check("server user", "ok", running)]
    if facts.config_problem is not None:
        checks.append(
            Check(
                "config",
                "fail",
                facts.config_problem,
                "fix conveyor.yaml (`conveyor validate` names file, line and field)",
            )
        )
    else:
        checks.append(_isolation(server, facts.services, facts.jobs))
    checks.extend(_run_as(each) for each in facts.run_as)
    checks.append(_state(facts.state_mode, facts.loose))
    for tool, needed_by in TOOLS.items():
        path = facts.tools.get(tool)
        if path is None:
            checks.append(
                Check(
                    tool,
                    "warn",
                    f"not installed: needed by {needed_by}",
                    f"install the Debian package ({'prometheus' if tool == 'promtool' else tool})",
                )
            )
        else:
            checks.append(Check(tool, "ok", path))
    return checks


def _isolation(
    server: User, services: Mapping[str, str | None], jobs: Sequence[str | None]
) -> Check:
    warning = root_warning(server, services, jobs)
    if warning is not None:
        return Check(
            "isolation",
            "warn",
            warning,
            "e.g. `run_as: conveyor-run` at the top of conveyor.yaml, after "
            f"`{CREATE_HINT}` on this host",
        )
    separated = [f"{name} as {run_as}" for name, run_as in services.items() if run_as]
    separated += [f"pipeline jobs as {run_as}" for run_as in jobs if run_as]
    if separated:
        return Check("isolation", "ok", "; ".join(separated))
    return Check(
        "isolation",
        "ok",
        f"no run_as: the code Conveyor starts runs as {server.name}, who owns .conveyor/ "
        "(not root, so it cannot switch users; the code can read that user's files)",
    )


def _run_as(each: RunAsFacts) -> Check:
    name = f"run_as {each.value}"
    used = ", ".join(each.used_by)
    if each.problem is not None:
        return Check(
            name,
            "fail",
            f"{used}: {each.problem}",
            f"create it ({CREATE_HINT}) and start the server as root, or change run_as",
        )
    if each.blocked is not None:
        return Check(
            name,
            "fail",
            f"{used}: {each.value} cannot reach the project's .conveyor/: {each.blocked}",
            "let other users search (chmod o+x, not read) every directory above the "
            "project, or move the project where they can",
        )
    return Check(name, "ok", f"{used}: exists, and can reach the project's .conveyor/")


def _state(mode: int | None, loose: Sequence[str]) -> Check:
    if mode is None:
        return Check(".conveyor/", "ok", "not created yet (`conveyor up` makes it 0700)")
    shown = ", ".join(loose[:SHOWN]) + (
        f" and {len(loose) - SHOWN} more" if len(loose) > SHOWN else ""
    )
    if loose:
        return Check(
            ".conveyor/",
            "warn",
            f"{len(loose)} path(s) give others more than Conveyor does: {shown}",
            "the server takes those permissions away at its next start (`conveyor down` "
            "then `conveyor up`)",
        )
    return Check(".conveyor/", "ok", f"{stat.filemode(mode)}; nothing in it is readable by others")


# --- looking ----------------------------------------------------------------------------


def gather(ctx: Context) -> Facts:
    """Everything ``diagnose`` needs, read from this host; never raises for a broken project."""
    from conveyor.server.files import running_server

    layout = ctx.layout
    running = running_server(layout)
    pid = None if running is None else running.pid
    server = (None if pid is None else _user_of(pid)) or current()
    tools = {tool: shutil.which(tool) for tool in TOOLS}
    state_mode, loose = _state_facts(layout)
    try:
        project = ctx.project()
    except ConveyorError as exc:
        return Facts(server, pid, exc.message, state_mode=state_mode, loose=loose, tools=tools)
    config = project.config
    services = {name: svc.run_as for name, svc in config.services.items()}
    jobs = () if config.pipeline is None else (config.pipeline.run_as,)
    subjects = [(f"service {name}", run_as) for name, run_as in services.items()]
    subjects += [("pipeline jobs", run_as) for run_as in jobs]
    return Facts(
        server,
        pid,
        None,
        services,
        jobs,
        tuple(_run_as_facts(subjects, server, layout)),
        state_mode,
        loose,
        tools,
    )


def _run_as_facts(
    subjects: Sequence[tuple[str, str | None]], server: User, layout: Layout
) -> list[RunAsFacts]:
    users: dict[str, list[str]] = {}
    for what, run_as in subjects:
        if run_as is not None:
            users.setdefault(run_as, []).append(what)
    found = []
    for value, used_by in users.items():
        try:
            user = require(value, server)
        except CannotSwitch as exc:
            found.append(RunAsFacts(value, tuple(used_by), problem=exc.message))
            continue
        blocked = None if user is None else barrier(layout.root, user, SEARCH)
        found.append(RunAsFacts(value, tuple(used_by), blocked=blocked))
    return found


def _state_facts(layout: Layout) -> tuple[int | None, tuple[str, ...]]:
    try:
        mode = stat.S_IMODE(layout.state.lstat().st_mode)
    except OSError:
        return None, ()
    return mode, tuple(tighten(layout, dry_run=True).changed)


def _user_of(pid: int) -> User | None:
    """Who a process runs as (its effective uid), from /proc."""
    import pwd

    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    ids = {
        line.split(":")[0]: int(line.split()[2])
        for line in lines
        if line.startswith(("Uid", "Gid"))
    }
    if "Uid" not in ids:
        return None
    try:
        entry = pwd.getpwuid(ids["Uid"])
    except KeyError:
        return User(str(ids["Uid"]), ids["Uid"], ids.get("Gid", -1), "?", "/")
    return User(entry.pw_name, ids["Uid"], ids.get("Gid", entry.pw_gid), "?", entry.pw_dir)


# --- the command ------------------------------------------------------------------------

STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@click.command()
@json_option
@pass_ctx
def doctor(ctx: Context, as_json: bool) -> None:
    """Check this host and project: who runs what, run_as users, permissions, tools.

    Local checks only, no server needed; changes nothing. Exits 1 when a check fails.
    """
    checks = diagnose(gather(ctx))
    if as_json:
        render.emit_json({"checks": [asdict(c) for c in checks]})
    else:
        console = render.out()
        for check in checks:
            style = STYLE[check.status]
            console.print(
                f"[{style}]{check.status:>4}[/] [bold]{render.esc(check.name)}[/]: "
                f"{render.esc(check.detail)}"
            )
            if check.hint and check.status != "ok":
                console.print(f"      [dim]hint: {render.esc(check.hint)}[/]")
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)
