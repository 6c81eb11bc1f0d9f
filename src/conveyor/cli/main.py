"""The `conveyor` command.

Commands that only need files (validate, schema, build, logs) work without a server; the
rest talk to the project's server over its HTTP API. Every command takes `--json`. User
errors print a message and a hint and exit non-zero; they never show a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from conveyor import errors
from conveyor.cli import render
from conveyor.cli.client import ApiClient, actor
from conveyor.config.loader import LoadedProject, find_config, load_project

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ROLLED_BACK = 10
EXIT_FAILED = 11


class Context:
    def __init__(self, directory: Path, file: Path | None) -> None:
        self.directory = directory.resolve()
        self.file = file

    def config_file(self) -> Path:
        if self.file is not None:
            path = self.file if self.file.is_absolute() else self.directory / self.file
            if not path.exists():
                raise errors.ConfigError(
                    [
                        errors.ConfigProblem(
                            str(path), None, "(file)", "no such file", "check --file"
                        )
                    ]
                )
            return path
        return find_config(self.directory)

    def project(self) -> LoadedProject:
        return load_project(self.config_file())

    @property
    def root(self) -> Path:
        return self.project().root

    def client(self) -> ApiClient:
        return ApiClient(self.root)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.ConveyorError as exc:
            if kwargs.get("as_json"):
                render.emit_json(exc.to_dict())
            else:
                render.error(exc)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    help="Project directory (where conveyor.yaml is).",
)
@click.option(
    "--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="Config file."
)
@click.version_option(package_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, directory: Path, file: Path | None) -> None:
    """Conveyor: build once, release progressively, roll back on its own."""
    ctx.obj = Context(directory, file)


pass_ctx = click.make_pass_decorator(Context)


# --- files only -----------------------------------------------------------------------


@cli.command()
@json_option
@pass_ctx
@handles_errors
def validate(ctx: Context, as_json: bool) -> None:
    """Check conveyor.yaml; errors name file, line, field and a fix."""
    project = ctx.project()
    summary: dict[str, Any] = {
        "file": str(project.file),
        "project": project.config.project,
        "services": list(project.config.services),
        "environments": list(project.config.environments),
        "valid": True,
    }
    if as_json:
        render.emit_json(summary)
        return
    render.console.print(
        f"[green]ok[/] {project.file}: project {project.config.project!r}, "
        f"{len(summary['services'])} service(s), environments {', '.join(summary['environments'])}"
    )


@cli.command()
@json_option
@handles_errors
def schema(as_json: bool) -> None:
    """Print the JSON Schema of conveyor.yaml (for editor completion)."""
    from conveyor.config.schema import json_schema

    print(json.dumps(json_schema(), indent=2))


@cli.command()
@click.argument("service")
@json_option
@pass_ctx
@handles_errors
def build(ctx: Context, service: str, as_json: bool) -> None:
    """Build SERVICE into an immutable, content-addressed artifact."""
    result = _build(ctx, service, quiet=as_json)
    if as_json:
        render.emit_json(_build_json(result))


def _build(ctx: Context, service: str, *, quiet: bool) -> Any:
    from conveyor.artifacts.build import build_service
    from conveyor.artifacts.store import ArtifactStore
    from conveyor.store.engine import default_url
    from conveyor.store.repository import Store

    project = ctx.project()
    svc = project.config.service(service)
    store = Store.open(default_url(project.root))
    try:
        if not quiet:
            render.console.print(f"building [bold]{escape(service)}[/] …")
        result = build_service(
            project.root, service, svc, store, ArtifactStore(project.root), actor=actor()
        )
    finally:
        store.close()
    if not quiet:
        a = result.artifact
        state = "unchanged, reused" if result.reused else "stored"
        dirty = " (dirty tree)" if a.dirty else ""
        render.console.print(
            f"[green]built[/] {service} {a.digest} ({state}) in {result.duration:.1f}s\n"
            f"  commit {a.commit or '-'} on {a.branch or '-'}{dirty}, "
            f"{a.files} files, {a.size} bytes"
        )
    return result


def _build_json(result: Any) -> dict[str, Any]:
    import dataclasses

    return {
        "artifact": dataclasses.asdict(result.artifact),
        "reused": result.reused,
        "duration": result.duration,
        "log": str(result.log_path),
    }


@cli.group()
def keys() -> None:
    """The key that signs every artifact's provenance, and the keys deploys trust."""


def _keys_json(current: Any, trusted: list[Any], previous: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "algorithm": "ed25519",
        "key": current.fingerprint,
        "public_key": current.public_pem,
        "path": str(current.path),
        "trusted": sorted(k.fingerprint for k in trusted),
    }
    if previous is not None:
        out["previous"] = previous.fingerprint
    return out


@keys.command("show")
@json_option
@pass_ctx
@handles_errors
def keys_show(ctx: Context, as_json: bool) -> None:
    """Print the signing key's public half and fingerprint (created if there is none yet)."""
    from conveyor.artifacts.signing import Keyring

    keyring = Keyring(ctx.root / ".conveyor" / "keys")
    current = keyring.current()
    trusted = keyring.trusted_infos()
    if as_json:
        render.emit_json(_keys_json(current, trusted))
        return
    render.console.print(f"signing key [bold]{current.fingerprint}[/] (ed25519)")
    render.console.print(escape(current.public_pem.rstrip()), highlight=False)
    render.console.print(f"trusted for verifying: {len(trusted)} key(s) in {keyring.directory}")


@keys.command("rotate")
@json_option
@pass_ctx
@handles_errors
def keys_rotate(ctx: Context, as_json: bool) -> None:
    """Sign new artifacts with a new key; the old public key stays trusted for older ones."""
    from conveyor.artifacts.signing import Keyring

    keyring = Keyring(ctx.root / ".conveyor" / "keys")
    current, previous = keyring.rotate()
    trusted = keyring.trusted_infos()
    if as_json:
        render.emit_json(_keys_json(current, trusted, previous))
        return
    was = f" (was {previous.fingerprint}, still trusted)" if previous else ""
    render.console.print(f"[green]rotated[/] signing key is now {current.fingerprint}{was}")


@cli.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment.")
@click.option("--lines", "-n", default=50, show_default=True, help="Lines per instance.")
@json_option
@pass_ctx
@handles_errors
def logs(ctx: Context, service: str, env: str, lines: int, as_json: bool) -> None:
    """Show the captured output of SERVICE's instances in ENV."""
    project = ctx.project()
    project.config.service(service)
    project.config.environment(env)
    from conveyor.runtime.local.logs import log_files, tail

    files = log_files(project.root / ".conveyor" / "runtime" / "logs", service, env)
    out = {f.stem: tail(f, lines) for f in files}
    if as_json:
        render.emit_json({"service": service, "env": env, "instances": out})
        return
    if not out:
        render.console.print(f"no logs yet for {service} in {env}", markup=False)
    for name, text in out.items():
        render.console.rule(name)
        for line in text:
            render.console.print(line, markup=False)


# --- server lifecycle -----------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="API port (0 picks a free one).")
@pass_ctx
@handles_errors
def server(ctx: Context, host: str, port: int) -> None:
    """Run the server in the foreground (API, controller, runtime, routers)."""
    from conveyor.server.runner import run

    run(ctx.config_file(), host=host, port=port)


@cli.command()
@click.option("--port", default=0, show_default=True, help="API port (0 picks a free one).")
@json_option
@pass_ctx
@handles_errors
def up(ctx: Context, port: int, as_json: bool) -> None:
    """Start the project's server in the background."""
    from conveyor.server.daemon import up as start

    project = ctx.project()
    url = start(project.root, project.file, port=port)
    if as_json:
        render.emit_json({"url": url})
    else:
        render.console.print(f"[green]up[/] conveyor server at {url}")


@cli.command()
@json_option
@pass_ctx
@handles_errors
def down(ctx: Context, as_json: bool) -> None:
    """Stop the server and every instance it started."""
    from conveyor.server.daemon import down as stop
    from conveyor.server.daemon import stop_leftovers

    project = ctx.project()
    pid = stop(project.root)
    leftovers = stop_leftovers(project.root, project.config.project)
    if as_json:
        render.emit_json({"stopped_server": pid, "stopped_leftover_instances": leftovers})
        return
    if pid is None:
        render.console.print("no server was running")
    else:
        render.console.print(f"[green]down[/] server (pid {pid}) stopped with its instances")
    if leftovers:
        render.console.print(f"stopped {leftovers} instance(s) left by a crashed server")


# --- releases ---------------------------------------------------------------------------


@cli.command()
@click.argument("service")
@click.option("--env", "env", required=True, help="Environment to deploy to.")
@click.option("--artifact", help="Artifact digest (or a unique prefix) to deploy.")
@click.option("--build", "do_build", is_flag=True, help="Build SERVICE first and deploy that.")
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Config for this release only."
)
@click.option("--wait", is_flag=True, help="Follow the rollout; exit non-zero if it rolls back.")
@json_option
@pass_ctx
@handles_errors
def deploy(
    ctx: Context,
    service: str,
    env: str,
    artifact: str | None,
    do_build: bool,
    assignments: tuple[str, ...],
    wait: bool,
    as_json: bool,
) -> None:
    """Release SERVICE to ENV: an artifact with its config, through the environment's strategy."""
    from conveyor.core.release import parse_assignments

    try:
        overrides = parse_assignments(assignments)
    except ValueError as exc:
        raise errors.ConveyorError(str(exc), hint="for example --set GREETING=hello") from None
    if do_build == bool(artifact):
        if not do_build and not artifact:
            artifact = _latest_artifact(ctx, service)
        else:
            raise errors.ConveyorError(
                "give either --artifact or --build, not both", hint="--build deploys what it builds"
            )
    client = ctx.client()
    if do_build:
        artifact = _build(ctx, service, quiet=as_json).artifact.digest
    release = client.post(
        "/api/v1/releases",
        {"service": service, "env": env, "artifact": artifact, "set": overrides},
    )
    _report_release(client, release, wait=wait, as_json=as_json)


def _latest_artifact(ctx: Context, service: str) -> str:
    from conveyor.store.engine import default_url
    from conveyor.store.repository import Store

    project = ctx.project()
    project.config.service(service)
    store = Store.open(default_url(project.root))
    try:
        found = store.list_artifacts(service, limit=1)
    finally:
        store.close()
    if not found:
        raise errors.NotFound(
            f"{service} has no artifact yet",
            hint=f"build one: `conveyor build {service}`, or deploy with --build",
        )
    return found[0].digest


@cli.command()
@click.argument("service")
@click.option("--env", "env", required=True)
@click.option("--to", "to", type=int, help="Revision to return to (default: the one before).")
@click.option("--wait", is_flag=True, help="Follow until done.")
@json_option
@pass_ctx
@handles_errors
def rollback(
    ctx: Context, service: str, env: str, to: int | None, wait: bool, as_json: bool
) -> None:
    """Abort the rollout in progress, or redeploy an earlier release (never rebuilds)."""
    client = ctx.client()
    release = client.post("/api/v1/rollback", {"service": service, "env": env, "to": to})
    _report_release(client, release, wait=wait, as_json=as_json, rollback=True)


def _report_release(
    client: ApiClient, release: dict[str, Any], *, wait: bool, as_json: bool, rollback: bool = False
) -> None:
    if not as_json:
        render.console.print(
            f"release [bold]{release['name']}[/] created: artifact "
            f"{render.short_digest(release['artifact_digest'])}, config {release['config_version']}"
            + (f" ({release['reason']})" if release.get("reason") else "")
        )
    if not wait:
        if as_json:
            render.emit_json(release)
        return
    final = follow(client, release, quiet=as_json)
    if as_json:
        render.emit_json(final)
    target_phase = (
        "rolled_back" if rollback and release.get("phase") == "rolling_back" else "succeeded"
    )
    if final["phase"] == target_phase:
        return
    sys.exit(EXIT_ROLLED_BACK if final["phase"] == "rolled_back" else EXIT_FAILED)


def follow(
    client: ApiClient, release: dict[str, Any], *, quiet: bool, timeout: float = 3600
) -> dict[str, Any]:
    """Print the release's ledger events as they happen until its rollout is over."""
    after = 0
    start = release["created_at"]
    deadline = time.monotonic() + timeout
    current = release
    with render.console.status("", spinner="dots") as spinner:
        while time.monotonic() < deadline:
            events = client.get("/api/v1/events", release=release["id"], after=after)["events"]
            for event in events:
                after = event["seq"]
                if not quiet:
                    render.console.print(render.event_line(event, start))
            current = client.get(f"/api/v1/releases/{release['id']}")
            spinner.update(f"[dim]{current['status'].get('message', '')}[/]")
            if current["phase"] in ("succeeded", "rolled_back", "failed"):
                break
            time.sleep(0.25)
    if not quiet:
        render.console.print(f"{current['name']}: {render.phase(current['phase'])}")
    return current


def _control(ctx: Context, service: str, env: str, action: str, wait: bool, as_json: bool) -> None:
    client = ctx.client()
    release = client.post("/api/v1/control", {"service": service, "env": env, "action": action})
    if not as_json and not wait:
        status = release.get("status") or {}
        render.console.print(
            f"{release['name']}: {render.phase(release['phase'])} — {status.get('message', '')}"
        )
    if wait:
        _report_release(client, release, wait=True, as_json=as_json, rollback=action == "abort")
    elif as_json:
        render.emit_json(release)


def _control_command(name: str, action: str, doc: str) -> None:
    @cli.command(name=name, help=doc)
    @click.argument("service")
    @click.option("--env", "env", required=True)
    @click.option("--wait", is_flag=True, help="Follow the rollout until it ends.")
    @json_option
    @pass_ctx
    @handles_errors
    def command(ctx: Context, service: str, env: str, wait: bool, as_json: bool) -> None:
        _control(ctx, service, env, action, wait, as_json)


_control_command("pause", "pause", "Hold a canary at its current step.")
_control_command("resume", "resume", "Release a hold placed with `conveyor pause`.")
_control_command("abort", "abort", "Roll the rollout in progress back to the stable version now.")
_control_command("retry", "retry", "Run the last aborted release again, from its first step.")


@cli.command()
@click.argument("service")
@click.option("--env", "env", required=True)
@click.option("--full", is_flag=True, help="Skip every remaining step: all users on the canary.")
@click.option("--wait", is_flag=True, help="Follow the rollout until it ends.")
@json_option
@pass_ctx
@handles_errors
def promote(ctx: Context, service: str, env: str, full: bool, wait: bool, as_json: bool) -> None:
    """Skip the current canary step (a pause, an inconclusive analysis), or all of them."""
    _control(ctx, service, env, "promote_full" if full else "promote", wait, as_json)


@cli.command()
@click.option("--env", "env", help="Only this environment.")
@json_option
@pass_ctx
@handles_errors
def status(ctx: Context, env: str | None, as_json: bool) -> None:
    """What runs where: revision, version, artifact, config, readiness, rollout, address."""
    rows = ctx.client().get("/api/v1/status", env=env)["services"]
    if as_json:
        render.emit_json(rows)
    elif not rows:
        render.console.print("nothing deployed yet")
    else:
        render.console.print(render.status_table(rows))


@cli.command()
@click.argument("service")
@click.option("--env", "env", required=True)
@click.option("--limit", default=20, show_default=True)
@json_option
@pass_ctx
@handles_errors
def history(ctx: Context, service: str, env: str, limit: int, as_json: bool) -> None:
    """The releases of SERVICE in ENV, newest first, with why each ended as it did."""
    releases = ctx.client().get("/api/v1/history", service=service, env=env, limit=limit)[
        "releases"
    ]
    if as_json:
        render.emit_json(releases)
    elif not releases:
        render.console.print(f"no releases of {service} in {env}", markup=False)
    else:
        render.console.print(render.history_table(releases))


@cli.command()
@click.option("--service")
@click.option("--env", "env")
@click.option("--release", "release_id", type=int)
@click.option("--limit", default=200, show_default=True)
@json_option
@pass_ctx
@handles_errors
def events(
    ctx: Context,
    service: str | None,
    env: str | None,
    release_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """The ledger: every transition with its actor, time and details."""
    rows = ctx.client().get(
        "/api/v1/events", service=service, env=env, release=release_id, limit=limit
    )["events"]
    if as_json:
        render.emit_json(rows)
        return
    for event in rows:
        who = f"[dim]{event['actor']}[/]"
        where = f"{event['service'] or ''}/{event['env'] or ''}".strip("/")
        render.console.print(f"{render.event_line(event)} [dim]{where}[/] {who}")


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the temporary project directory.")
@json_option
@handles_errors
def demo(keep: bool, as_json: bool) -> None:
    """Run the whole story unattended in a temporary directory and print a report."""
    from conveyor.cli.demo import run_demo

    report = run_demo(keep=keep, quiet=as_json)
    if as_json:
        render.emit_json(report)
    if not report["ok"]:
        sys.exit(1)


# Pipeline commands (run, export) live in their own module.
from conveyor.cli.pipeline_commands import add_commands as _add_pipeline_commands  # noqa: E402

_add_pipeline_commands(cli)


def main() -> None:
    cli(prog_name="conveyor")
