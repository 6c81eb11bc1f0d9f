"""The `conveyor` command: the root group and the registry of its subcommands.

This module is imported by every invocation, so it imports click and nothing heavy: each
subcommand lives in a module of ``conveyor.cli.commands`` that is imported only when that
subcommand runs (``lazy.LazyGroup``). Commands that talk to the server reach it through
``client.ApiClient`` and never open the state store; commands that build, validate or run
a pipeline import the config models and the artifact code themselves.

Every command takes ``-C DIR`` and ``--file``, before or after its name, and all that print
results take ``--json``. User errors print a message and a hint and exit with the code in
docs/cli.md; they never show a traceback (``failures.handles_errors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from conveyor import __version__
from conveyor.cli.context import Context
from conveyor.cli.failures import handles_errors
from conveyor.cli.lazy import Entry, LazyGroup
from conveyor.cli.options import DIRECTORY_HELP, FILE_HELP, project_options

_C = "conveyor.cli.commands"

COMMANDS = {
    # files
    "validate": Entry(
        f"{_C}.config:validate", "Check conveyor.yaml; errors name file, line, field and a fix."
    ),
    "schema": Entry(
        f"{_C}.config:schema", "Print the JSON Schema of conveyor.yaml (for editor completion)."
    ),
    "doctor": Entry(
        f"{_C}.doctor:doctor",
        "Check this host and project: who runs what, run_as users, permissions, tools.",
    ),
    # the server
    "server": Entry(
        f"{_C}.server:server",
        "Run the server in the foreground (API, controller, runtime, routers).",
    ),
    "up": Entry(f"{_C}.server:up", "Start the project's server in the background."),
    "down": Entry(
        f"{_C}.server:down", "Stop the server, its routers and every instance it started."
    ),
    "dashboard": Entry(
        f"{_C}.server:dashboard", "Open the web dashboard of the running server in a browser."
    ),
    # artifacts
    "build": Entry(
        f"{_C}.build:build", "Build SERVICE into an immutable, content-addressed artifact."
    ),
    "keys": Entry(
        f"{_C}.keys:keys",
        "The key that signs every artifact's provenance, and the keys deploys trust.",
    ),
    "tokens": Entry(
        f"{_C}.tokens:tokens",
        "API tokens: who may read, deploy or administer, in which environments.",
    ),
    "whoami": Entry(
        f"{_C}.tokens:whoami",
        "Who the server takes this caller for: identity, role and environments.",
    ),
    # releases
    "deploy": Entry(
        f"{_C}.releases:deploy",
        "Release SERVICE to ENV: an artifact with its config, through the environment's strategy.",
    ),
    "rollback": Entry(
        f"{_C}.releases:rollback",
        "Abort the rollout in progress, or redeploy an earlier release (never rebuilds).",
    ),
    "promote": Entry(
        f"{_C}.releases:promote",
        "Skip the current canary step (a pause, an inconclusive analysis), or all of them.",
    ),
    "pause": Entry(f"{_C}.releases:pause", "Hold a canary at its current step."),
    "resume": Entry(f"{_C}.releases:resume", "Release a hold placed with `conveyor pause`."),
    "abort": Entry(
        f"{_C}.releases:abort", "Roll the rollout in progress back to the stable version now."
    ),
    "retry": Entry(
        f"{_C}.releases:retry", "Run the last aborted release again, from its first step."
    ),
    "migrate": Entry(
        f"{_C}.migrate:migrate",
        "Schema migrations: what an environment's schema holds; undo an expand on purpose.",
    ),
    # people in the loop
    "approvals": Entry(
        f"{_C}.approvals:approvals",
        "What waits for approval: release, who asked, when, what is missing, from whom.",
    ),
    "show-approval": Entry(
        f"{_C}.approvals:show_approval",
        "Show the approval page of RELEASE: artifact, gates, changes, rollout and rollback plans.",
    ),
    "approve": Entry(
        f"{_C}.approvals:approve",
        "Approve RELEASE, bound to the page it has now (its content and page hashes).",
    ),
    "reject": Entry(
        f"{_C}.approvals:reject",
        "Reject RELEASE: one rejection ends the request, and the release never runs.",
    ),
    "review": Entry(
        f"{_C}.approvals:review",
        "Sign off a release deployed with --emergency, after the fact (not by who deployed it).",
    ),
    "access": Entry(
        f"{_C}.access:access",
        "Roles per environment: the access policy in force, and applying conveyor.yaml's.",
    ),
    "audit": Entry(
        f"{_C}.audit:audit",
        "The audit trail of a period: approvals, emergency overrides, refusals, rollbacks.",
    ),
    # feature flags
    "flag": Entry(
        f"{_C}.flags:flag",
        "Feature flags: list, show, on/off (--all: kill switch), rollout, rules, history, drift.",
    ),
    "relay": Entry(
        f"{_C}.relay:relay",
        "A flag relay next to applications: syncs flags, serves SDKs and OFREP through outages.",
    ),
    # what runs, what happened
    "status": Entry(
        f"{_C}.views:status",
        "What runs where: revision, version, artifact, config, readiness, rollout, address.",
    ),
    "history": Entry(
        f"{_C}.views:history",
        "The releases of SERVICE in ENV, newest first, with why each ended as it did.",
    ),
    "events": Entry(
        f"{_C}.views:events", "The ledger: every transition with its actor, time and details."
    ),
    "logs": Entry(f"{_C}.views:logs", "Show the captured output of SERVICE's instances in ENV."),
    "windows": Entry(
        f"{_C}.windows:windows",
        "Whether deploys may start now, per environment: by which window, and the next change.",
    ),
    "dora": Entry(
        f"{_C}.insight:dora",
        "DORA's five keys per service, each with its DORA 2024 performance band.",
    ),
    "incident": Entry(
        f"{_C}.insight:incident",
        "Incidents: open, resolve, list (ledger events; they count in DORA's keys).",
    ),
    "slo": Entry(
        f"{_C}.slo:slo",
        "SLOs: error budgets and burn-rate alerts; Prometheus rules for the same alerts.",
    ),
    "ledger": Entry(
        f"{_C}.ledger:ledger", "The ledger's hash chain and signed checkpoints: verify them."
    ),
    # pipelines
    "run": Entry(
        f"{_C}.pipeline:run",
        "Run the pipeline here: its DAG with bounded parallelism, fail-fast, cached, masked.",
    ),
    "export": Entry(
        f"{_C}.pipeline:export_command",
        "Write a GitHub Actions or GitLab CI workflow that calls `conveyor run --job` per job.",
    ),
    "init": Entry(
        f"{_C}.pipeline:init",
        "Create SERVICE/conveyor.yaml whose pipeline extends a shared template.",
    ),
    "evidence": Entry(
        f"{_C}.evidence:evidence",
        "Show what was checked and the results, of a pipeline run or of a release.",
    ),
    "demo": Entry(
        f"{_C}.demo:demo",
        "Run the whole story unattended in a temporary directory and print a report.",
    ),
}


class Conveyor(LazyGroup):
    """The root group: lazy commands, and every failure reported in one place."""

    @handles_errors
    def invoke(self, ctx: click.Context) -> Any:
        return super().invoke(ctx)


@click.group(
    cls=Conveyor,
    registry=COMMANDS,
    shared=project_options,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "-C",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    metavar="DIR",
    help=DIRECTORY_HELP,
)
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), help=FILE_HELP)
@click.version_option(__version__, prog_name="conveyor")
@click.pass_context
def cli(ctx: click.Context, directory: Path, file: Path | None) -> None:
    """Conveyor: build once, release progressively, roll back on its own."""
    ctx.obj = Context(directory, file)


def main() -> None:
    cli(prog_name="conveyor")
