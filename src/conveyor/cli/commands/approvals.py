"""People in the loop: what waits for approval, the page that shows the evidence, the votes.

`conveyor approvals` lists the releases waiting for people; `conveyor show-approval` prints
one release's approval page (``GET /api/v1/approvals/{id}``) on one screen; `approve` and
`reject` fetch that page first and send its content hash and page hash with the vote, so
the ledger records what the voter was shown and a release that changed since counts the
vote for nothing (the server refuses it: "not what you were shown"). `review` signs off a
release that used the emergency path, after the fact.

RELEASE is an id or one of `conveyor evidence`'s forms (``references``); ``SERVICE/ENV``
alone means the newest release there waiting for approval (for `review`: the newest with
an open review). An id pins the exact request: a newer deploy is a new id, and the old one
is no longer waiting.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.cli.references import (
    newest_open_review,
    newest_waiting,
    release_id,
)

RELEASE_HELP = "RELEASE: an id, or SERVICE/ENV (its newest release waiting for approval)"
SHOWN = 8  # commits and files listed on the page; --json has all of them


@click.command()
@json_option
@pass_ctx
def approvals(ctx: Context, as_json: bool) -> None:
    """What waits for approval: release, who asked, when, what is missing, from whom."""
    client = ctx.client()
    if not as_json:
        render.preload()
    waiting: list[dict[str, Any]] = client.get("/api/v1/approvals")["approvals"]
    if as_json:
        render.emit_json(waiting)
        return
    console = render.out()
    if not waiting:
        console.print("nothing waits for approval", markup=False)
        return
    console.print(_waiting_table(waiting))
    console.print(
        "[dim]see one: conveyor show-approval ID; then conveyor approve ID, or "
        "conveyor reject ID --comment ...[/]"
    )


@click.command("show-approval")
@click.argument("reference", metavar="RELEASE")
@json_option
@pass_ctx
def show_approval(ctx: Context, reference: str, as_json: bool) -> None:
    """Show the approval page of RELEASE: artifact, gates, changes, rollout and rollback plans.

    RELEASE: an id, or SERVICE/ENV (its newest release waiting for approval),
    SERVICE/ENV@N, SERVICE/ENV@rN or 'SERVICE/ENV rN'. The page hash at the bottom is
    what a vote records.
    """
    client = ctx.client()
    if not as_json:
        render.preload()
    target = release_id(client, reference, newest_waiting, what="waits for approval")
    page: dict[str, Any] = client.get(f"/api/v1/approvals/{target}")
    if as_json:
        render.emit_json(page)
    else:
        print_page(page)


@click.command()
@click.argument("reference", metavar="RELEASE")
@click.option("--comment", default="", help="Why, for the record.")
@json_option
@pass_ctx
def approve(ctx: Context, reference: str, comment: str, as_json: bool) -> None:
    """Approve RELEASE, bound to the page it has now (its content and page hashes).

    RELEASE: an id, or SERVICE/ENV (its newest release waiting for approval).
    """
    _vote(ctx, reference, "approve", comment, as_json)


@click.command()
@click.argument("reference", metavar="RELEASE")
@click.option("--comment", required=True, help="Why not: the person who asked reads it.")
@json_option
@pass_ctx
def reject(ctx: Context, reference: str, comment: str, as_json: bool) -> None:
    """Reject RELEASE: one rejection ends the request, and the release never runs.

    RELEASE: an id, or SERVICE/ENV (its newest release waiting for approval).
    """
    _vote(ctx, reference, "reject", comment, as_json)


@click.command()
@click.argument("reference", metavar="RELEASE")
@click.option("--comment", required=True, help="What was checked.")
@json_option
@pass_ctx
def review(ctx: Context, reference: str, comment: str, as_json: bool) -> None:
    """Sign off a release deployed with --emergency, after the fact (not by who deployed it).

    RELEASE: an id, or SERVICE/ENV (its newest release with an open review).
    """
    client = ctx.client()
    target = release_id(client, reference, newest_open_review, what="has an open review")
    release: dict[str, Any] = client.post(f"/api/v1/reviews/{target}", {"comment": comment})
    if as_json:
        render.emit_json(release)
        return
    render.out().print(
        f"[green]reviewed[/] {render.esc(release['name'])} (#{release['id']}): "
        "its emergency review is closed"
    )


def _vote(ctx: Context, reference: str, decision: str, comment: str, as_json: bool) -> None:
    client = ctx.client()
    target = release_id(client, reference, newest_waiting, what="waits for approval")
    page: Mapping[str, Any] = client.get(f"/api/v1/approvals/{target}")
    content, page_hash = page["release"]["content"], page["page_hash"]
    release: dict[str, Any] = client.post(
        f"/api/v1/approvals/{target}",
        {"decision": decision, "comment": comment, "content": content, "page": page_hash},
    )
    if as_json:
        render.emit_json(
            {"decision": decision, "content": content, "page": page_hash, "release": release}
        )
        return
    _say_what_was_voted_on(page, decision)
    render.out().print(_outcome(release))


def _say_what_was_voted_on(page: Mapping[str, Any], decision: str) -> None:
    esc = render.esc
    console = render.out()
    release, artifact = page["release"], page["artifact"]
    verb = "approved" if decision == "approve" else "rejected"
    console.print(
        f"you {verb} [bold]{esc(release['name'])}[/] (#{release['id']}) as shown on page "
        f"{esc(page['page_hash'])}: content {esc(release['content'])}, artifact "
        f"{render.short_digest(artifact['digest'])}"
    )
    if decision == "approve" and not (artifact["bytes_ok"] and artifact["signature_ok"]):
        problems = "; ".join(artifact["problems"]) or "it does not verify"
        console.print(
            f"[yellow]warning:[/] the artifact does not verify now ({esc(problems)}); "
            "the deploy will refuse it"
        )


def _outcome(release: Mapping[str, Any]) -> str:
    """The release's state after the vote, in words: started, still waiting, rejected."""
    esc = render.esc
    name = f"[bold]{esc(release['name'])}[/] (#{release['id']})"
    phase = release["phase"]
    message = esc((release.get("status") or {}).get("message") or "")
    if phase == "pending_approval":
        return f"{name} is still waiting: {message}"
    if phase == "rejected":
        return f"{name} {render.phase(phase)}: {message}; it will not run"
    if phase == "cancelled":
        return f"{name} {render.phase(phase)}: {message}"
    return (
        f"{name} is approved and its rollout started ({render.phase(phase)}): follow it with "
        f"`conveyor status` or `conveyor events --release {release['id']}`"
    )


# --- drawing ------------------------------------------------------------------------------


def _waiting_table(waiting: Sequence[Mapping[str, Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title="waiting for approval", title_justify="left")
    for column in ("id", "release", "asked by", "asked", "approvals", "from", "expires"):
        table.add_column(column)
    for item in waiting:
        release, state = item["release"], item["approval"]
        rule = state.get("rule") or {}
        given = state.get("approvals") or []
        required = rule.get("required", len(given) + state.get("missing", 0))
        counts = f"{len(given)}/{required}, {state.get('missing', 0)} missing"
        if given:
            counts += f" (approved by {', '.join(given)})"
        table.add_row(
            Text(str(release["id"])),
            Text(str(release["name"])),
            Text(str(release["actor"])),
            Text(render.when(state.get("requested_at", release["created_at"]))),
            Text(counts),
            Text(", ".join(rule.get("reviewers") or []) or "any approver"),
            Text(_expiry(state.get("expires_at"))),
        )
    return table


def _expiry(at: object) -> str:
    if not isinstance(at, int | float):
        return "-"
    left = at - time.time()
    if left <= 0:
        return f"{render.when(at)} (expired)"
    return f"{render.when(at)} (in {_span(left)})"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24}h"


def print_page(page: Mapping[str, Any]) -> None:
    """The approval page on one screen, in the order a reviewer reads it."""
    out = render.out().print
    _head(page)
    out(_section("artifact"), *_artifact(page), sep="\n")
    out(_section("gates"), *_gates(page), sep="\n")
    out(_section("changes"), *_changes(page["changes"]), sep="\n")
    out(_section("rollout"), *_rollout(page["rollout"]), sep="\n")
    out(_section("rollback"), *_rollback(page["rollback"]), sep="\n")
    out(_section("approval"), *_approval(page), sep="\n")
    out(f"\n[bold]page[/] {render.esc(page['page_hash'])}")


def _section(title: str) -> str:
    return f"\n[bold]{title}[/]"


def _head(page: Mapping[str, Any]) -> None:
    esc = render.esc
    release = page["release"]
    render.out().print(
        f"[bold]{esc(release['name'])}[/] (#{release['id']}) {render.phase(release['phase'])}"
        f" — asked by {esc(release['asked_by'])} at {render.when(release['asked_at'])} "
        f"({esc(release['reason'])})"
    )
    render.out().print(f"  content {esc(release['content'])}")


def _ok(good: bool, yes: str, no: str) -> str:
    return f"[green]{yes}[/]" if good else f"[red]{no}[/]"


def _artifact(page: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    artifact = page["artifact"]
    tree = {True: "dirty tree", False: "clean", None: "unknown tree"}[artifact["dirty"]]
    lines = [
        f"  {esc(artifact['digest'])}",
        f"  commit {esc(artifact['commit'] or 'unknown')} on "
        f"{esc(artifact['branch'] or 'unknown branch')} ({tree})",
        "  verified now: bytes "
        + _ok(artifact["bytes_ok"], "intact", "CHANGED")
        + ", signature "
        + _ok(
            artifact["signature_ok"],
            esc(f"verified ({render.short_digest(artifact['signed_by'])})"),
            "DOES NOT VERIFY",
        ),
    ]
    lines += [f"  [red]problem[/]: {esc(p)}" for p in artifact["problems"]]
    return lines


def _gates(page: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    gates: Mapping[str, str] = page["gates"]
    lines = []
    if gates:
        lines.append(
            "  "
            + ", ".join(
                f"{esc(name)} {render.job_state(result)}" for name, result in sorted(gates.items())
            )
            + " [dim](signed pipeline-run attestations)[/]"
        )
    else:
        lines.append("  no signed pipeline-run attestation for this artifact")
    requirements = page["requirements"]
    if requirements["problem"]:
        lines.append(f"  requirements: [yellow]cannot evaluate[/]: {esc(requirements['problem'])}")
    elif requirements["unmet"]:
        lines += [f"  requirement [red]unmet[/]: {esc(u)}" for u in requirements["unmet"]]
    else:
        lines.append("  requirements of the environment: [green]met now[/]")
    return lines


def _changes(changes: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    running = changes["running"]
    if running is None:
        lines = ["  against: nothing runs there yet (a first release)"]
    else:
        lines = [
            f"  against r{running['revision']}: artifact "
            f"{render.short_digest(running['artifact'])}, commit "
            f"{esc((running['commit'] or 'unknown')[:12])}"
            + (" [dim](the same artifact: a config change)[/]" if changes["same_artifact"] else "")
        ]
    commits = changes.get("commits")
    files = changes.get("files")
    if commits is None:
        lines.append(f"  commits, files: {esc(changes.get('git') or 'not known')}")
    else:
        lines.append(f"  commits ({len(commits)}):" if commits else "  commits: none")
        for commit in commits[:SHOWN]:
            lines.append(
                f"    {esc(commit.get('sha', '')[:10])}  {esc(commit.get('author', ''))}  "
                f"{esc(commit.get('subject', ''))}"
            )
        lines += _more(len(commits), "commit(s)")
        lines.append(f"  files changed ({len(files or [])}):" if files else "  files changed: none")
        for file in (files or [])[:SHOWN]:
            lines.append(
                f"    {esc(file['path'])} [green]+{file['added']}[/] [red]-{file['removed']}[/]"
            )
        lines += _more(len(files or []), "file(s)")
    lines += _config_lines(changes["config"])
    return lines


def _more(count: int, what: str) -> list[str]:
    return (
        [f"    [dim]… and {count - SHOWN} more {what} (--json lists all)[/]"]
        if count > SHOWN
        else []
    )


def _config_lines(config: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    added, changed, removed = config["added"], config["changed"], config["removed"]
    if not (added or changed or removed):
        return ["  config: unchanged"]
    lines = ["  config:"]
    lines += [f"    [green]+[/] {esc(k)}={esc(_value(v))}" for k, v in added.items()]
    lines += [
        f"    [yellow]~[/] {esc(k)}: {esc(_value(v['from']))} → {esc(_value(v['to']))}"
        for k, v in changed.items()
    ]
    lines += [f"    [red]-[/] {esc(k)}" for k in removed]
    return lines


def _value(value: object) -> str:
    """A config value as shown: a secret as its reference (the page never holds a value)."""
    secret = value.get("secret") if isinstance(value, Mapping) else None
    if isinstance(secret, Mapping) and secret:
        source, name = next(iter(secret.items()))
        return f"(secret from {source} {name})"
    return str(value)


def _rollout(rollout: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    lines = [f"  {esc(rollout['strategy'])} to {rollout['instances']} instance(s)"]
    if rollout["steps"]:
        lines.append("  steps: " + esc(" → ".join(rollout["steps"])))
    analyses: Mapping[str, Sequence[Mapping[str, Any]]] = rollout["analysis"]
    for name, metrics in sorted(analyses.items()):
        described = "; ".join(
            f"{m['metric']} ({m['provider']})"
            + (f" fails when {m['failure']}" if m.get("failure") else "")
            for m in metrics
        )
        background = (
            " [dim](in the background)[/]" if name == rollout["background_analysis"] else ""
        )
        lines.append(f"  analysis {esc(name)}: {esc(described)}{background}")
    triggers = rollout["triggers"]
    lines.append(
        f"  rolls back on its own: error rate above {triggers['error_rate']:.1%} over "
        f"{triggers['window']:g}s, {triggers['max_restarts']} restarts of an instance, no "
        f"progress for {rollout['progress_deadline']:g}s; watched {triggers['verification']:g}s "
        "after all users are on it"
    )
    return lines


def _rollback(rollback: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    target = rollback.get("to")
    if target is None:
        return [f"  {esc(rollback.get('note') or 'nothing to return to')}"]
    if rollback.get("problem"):
        return [f"  to r{target['revision']}: [red]{esc(rollback['problem'])}[/]"]
    lines = [
        f"  to r{target['revision']}: artifact {render.short_digest(target['artifact'])}, commit "
        f"{esc((target['commit'] or 'unknown')[:12])}, {target['instances']} instance(s); "
        "artifact "
        + _ok(rollback["artifact_present"], "present", "MISSING")
        + ", "
        + _ok(rollback["verifies"], "verifies", "DOES NOT VERIFY")
    ]
    lines += [f"  [red]problem[/]: {esc(p)}" for p in rollback.get("problems") or []]
    triggers = rollback.get("fires_on_its_own_when") or []
    if triggers:
        lines.append(f"  fires on its own when {esc('; or '.join(triggers))}")
    return lines


def _approval(page: Mapping[str, Any]) -> list[str]:
    esc = render.esc
    state = page["approval"]
    if not state.get("required"):
        return ["  this environment asks for no approval"]
    rule = state["rule"]
    who = ", ".join(rule["reviewers"]) or "anyone with the approver role"
    rules = [f"{rule['required']} approval(s) from {who}"]
    if rule["prevent_self_review"]:
        rules.append("not by who asked or wrote a commit")
    if rule["wait_timer"]:
        rules.append(f"then a {rule['wait_timer']:g}s wait")
    lines = [
        "  " + esc("; ".join(rules)),
        f"  {esc(state['verdict'])}: {esc(state['message'])}; "
        f"expires {_expiry(state['expires_at'])}",
    ]
    if state["approvals"]:
        lines.append(f"  approved by: {esc(', '.join(state['approvals']))}")
    lines += [f"  [dim]not counted: {esc(why)}[/]" for why in state["ignored"]]
    release = page["release"]
    if release["phase"] == "pending_approval":
        lines.append(
            f"  [dim]conveyor approve {release['id']} --comment ...  |  "
            f"conveyor reject {release['id']} --comment ...[/]"
        )
    return lines
