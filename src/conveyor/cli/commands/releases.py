"""Commands that change what runs: deploy, rollback, and the controls of a rollout.

Each is one or two API calls, and the answer is printed as the new state (a control action
answers with the release as it stands after the action). With ``--wait`` the command
follows the rollout's ledger events until it ends and exits 10 if it rolled back, 11 if it
failed, was rejected or was cancelled (docs/cli.md). A release to an approval-gated
environment first waits for people: the command says so, and ``--wait`` waits for them too
(the approval's expiry bounds that wait, not the rollout's timeout). Only ``deploy --build``
imports more than the client: the build.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click

from conveyor import errors
from conveyor.cli import render
from conveyor.cli.client import ApiClient
from conveyor.cli.context import Context
from conveyor.cli.follow import WAITING_FOR_PEOPLE, follow
from conveyor.cli.options import json_option, pass_ctx

EXIT_ROLLED_BACK = 10
EXIT_FAILED = 11


@click.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment to deploy to.")
@click.option("--artifact", help="Artifact digest (or a unique prefix) to deploy.")
@click.option("--build", "do_build", is_flag=True, help="Build SERVICE first and deploy that.")
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Config for this release only."
)
@click.option("--wait", is_flag=True, help="Follow the rollout; exit non-zero if it rolls back.")
@click.option(
    "--emergency",
    is_flag=True,
    help="Skip approval and windows (the emergency role; with --reason; reviewed afterwards).",
)
@click.option("--reason", help="Why the emergency path is taken (recorded, notified).")
@click.option(
    "--fix",
    metavar="WHAT",
    help="Mark a roll-forward that repairs a failed release (DORA: rework, and the release "
    "it replaces failed).",
)
@json_option
@pass_ctx
def deploy(
    ctx: Context,
    service: str,
    env: str,
    artifact: str | None,
    do_build: bool,
    assignments: tuple[str, ...],
    wait: bool,
    emergency: bool,
    reason: str | None,
    fix: str | None,
    as_json: bool,
) -> None:
    """Release SERVICE to ENV: an artifact with its config, through the environment's strategy.

    Without --artifact or --build, the newest artifact built for SERVICE is deployed.
    --emergency --reason TEXT skips the environment's approval and windows (never the
    artifact's verification, never the rollback triggers): it needs the emergency role, is
    recorded with the reason, and leaves a review open until someone else signs it off.
    """
    from conveyor.core.release import parse_assignments

    try:
        overrides = parse_assignments(assignments)
    except ValueError as exc:
        raise errors.UsageError(str(exc), hint="for example --set GREETING=hello") from None
    if do_build and artifact:
        raise errors.UsageError(
            "give either --artifact or --build, not both", hint="--build deploys what it builds"
        )
    if emergency != (reason is not None):
        raise errors.UsageError(
            "--emergency and --reason go together",
            hint='conveyor deploy SERVICE --env ENV --emergency --reason "what is on fire"',
        )
    if reason is not None and not reason.strip():
        raise errors.UsageError(
            "the emergency path needs a reason", hint='--reason "what is on fire"'
        )
    client = ctx.client()  # before building: a release that cannot be created needs no build
    if do_build:
        artifact = _build(ctx, client, service, quiet=as_json)
    elif artifact is None:
        artifact = latest_artifact(client, service, env)
    body: dict[str, Any] = {"service": service, "env": env, "artifact": artifact, "set": overrides}
    if reason is not None:
        body["emergency"] = reason
    if fix is not None:
        body["fix"] = fix
    release = client.post("/api/v1/releases", body)
    report_release(client, release, wait=wait, as_json=as_json)


def _build(ctx: Context, client: ApiClient, service: str, *, quiet: bool) -> str:
    from conveyor.cli.publish import build_and_publish, print_published

    config = ctx.project().config.service(service)
    if not quiet:
        render.out().print(f"building [bold]{render.esc(service)}[/] …")
    published = build_and_publish(client, ctx.layout, service, config)
    if not quiet:
        print_published(service, published)
    return published.digest


def latest_artifact(client: ApiClient, service: str, env: str) -> str:
    """The digest of the newest artifact built for ``service``.

    The artifact list of a name the project does not have is merely empty, so before
    saying "no artifact yet" the server is asked about the names (history checks both and
    suggests the name that was meant).
    """
    found = client.get("/api/v1/artifacts", service=service, limit=1)["artifacts"]
    if not found:
        client.get("/api/v1/history", service=service, env=env, limit=1)
        raise errors.NotFound(
            f"{service} has no artifact yet",
            hint=f"build one: `conveyor build {service}`, or deploy with --build",
        )
    return str(found[0]["digest"])


@click.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment.")
@click.option("--to", "to", type=int, help="Revision to return to (default: the one before).")
@click.option("--wait", is_flag=True, help="Follow until done.")
@json_option
@pass_ctx
def rollback(
    ctx: Context, service: str, env: str, to: int | None, wait: bool, as_json: bool
) -> None:
    """Abort the rollout in progress, or redeploy an earlier release (never rebuilds)."""
    client = ctx.client()
    release = client.post("/api/v1/rollback", {"service": service, "env": env, "to": to})
    report_release(client, release, wait=wait, as_json=as_json, rollback=True)


def report_release(
    client: ApiClient,
    release: Mapping[str, Any],
    *,
    wait: bool,
    as_json: bool,
    rollback: bool = False,
) -> None:
    """Say which release was created; with ``wait``, follow it and exit as it ended."""
    if not as_json:
        reason = f" ({render.esc(release['reason'])})" if release.get("reason") else ""
        render.out().print(
            f"release [bold]{render.esc(release['name'])}[/] created: artifact "
            f"{render.short_digest(release['artifact_digest'])}, "
            f"config {render.esc(release['config_version'])}{reason}"
        )
        _say_what_it_waits_for(release)
    if not wait:
        if as_json:
            render.emit_json(release)
        return
    final = watch(client, release, quiet=as_json)
    if as_json:
        render.emit_json(final)
    target = "rolled_back" if rollback and release.get("phase") == "rolling_back" else "succeeded"
    if final["phase"] == target:
        return
    sys.exit(EXIT_ROLLED_BACK if final["phase"] == "rolled_back" else EXIT_FAILED)


def _say_what_it_waits_for(release: Mapping[str, Any]) -> None:
    """A release that waits for people, or skipped them, says so where it was asked for."""
    console = render.out()
    message = render.esc((release.get("status") or {}).get("message") or "")
    if release.get("phase") == WAITING_FOR_PEOPLE:
        console.print(
            f"[magenta]waiting for approval[/]: {message}; the page: "
            f"conveyor show-approval {release['id']}"
        )
    if str(release.get("reason") or "").startswith("emergency:"):
        console.print(
            "[yellow]emergency path[/]: approval and windows skipped, on the record; a review "
            f"stays open until someone else signs it off: conveyor review {release['id']} "
            '--comment "..."'
        )


def watch(
    client: ApiClient, release: Mapping[str, Any], *, quiet: bool, timeout: float = 3600
) -> Mapping[str, Any]:
    """Print the release's ledger events as they happen until its rollout is over."""
    console = render.out()
    start = release["created_at"]
    with console.status("", spinner="dots") as spinner:

        def on_event(event: Mapping[str, Any]) -> None:
            if not quiet:
                console.print(render.event_line(event, start))

        def on_poll(current: Mapping[str, Any]) -> None:
            message = (current.get("status") or {}).get("message", "")
            waiting = "waiting for approval: " if current["phase"] == WAITING_FOR_PEOPLE else ""
            spinner.update(f"[dim]{waiting}{render.esc(message)}[/]")

        final = follow(
            client,
            release,
            on_event=on_event,
            on_poll=on_poll,
            timeout=timeout,
            people_excluded=True,
        )
    if not quiet:
        phase = final["phase"]
        message = (final.get("status") or {}).get("message") or ""
        said = f" — {render.esc(message)}" if phase != "succeeded" and message else ""
        console.print(f"{render.esc(final['name'])}: {render.phase(phase)}{said}")
    return final


def _control(ctx: Context, service: str, env: str, action: str, wait: bool, as_json: bool) -> None:
    client = ctx.client()
    release = client.post("/api/v1/control", {"service": service, "env": env, "action": action})
    if not as_json and not wait:
        message = (release.get("status") or {}).get("message", "")
        render.out().print(
            f"{render.esc(release['name'])}: {render.phase(release['phase'])} — "
            f"{render.esc(message)}"
        )
    if wait:
        report_release(client, release, wait=True, as_json=as_json, rollback=action == "abort")
    elif as_json:
        render.emit_json(release)


def _control_command(name: str, action: str, doc: str) -> click.Command:
    @click.command(name=name, help=doc)
    @click.argument("service")
    @click.option("--env", "env", required=True, help="Environment.")
    @click.option("--wait", is_flag=True, help="Follow the rollout until it ends.")
    @json_option
    @pass_ctx
    def command(ctx: Context, service: str, env: str, wait: bool, as_json: bool) -> None:
        _control(ctx, service, env, action, wait, as_json)

    return command


pause = _control_command("pause", "pause", "Hold a canary at its current step.")
resume = _control_command("resume", "resume", "Release a hold placed with `conveyor pause`.")
abort = _control_command(
    "abort", "abort", "Roll the rollout in progress back to the stable version now."
)
retry = _control_command(
    "retry", "retry", "Run the last aborted release again, from its first step."
)


@click.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment.")
@click.option("--full", is_flag=True, help="Skip every remaining step: all users on the canary.")
@click.option("--wait", is_flag=True, help="Follow the rollout until it ends.")
@json_option
@pass_ctx
def promote(ctx: Context, service: str, env: str, full: bool, wait: bool, as_json: bool) -> None:
    """Skip the current canary step (a pause, an inconclusive analysis), or all of them."""
    _control(ctx, service, env, "promote_full" if full else "promote", wait, as_json)
