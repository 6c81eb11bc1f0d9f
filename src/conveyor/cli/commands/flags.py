"""`conveyor flag`: feature flags, read and changed through the server's API.

Every change names an environment (or ``--all`` for the kill switch) and a reason; the
server checks the caller may change that environment and records the change, with the
diff, on the ledger. ``drift`` shows the flags changed live that differ from conveyor.yaml
and, with ``--write``, writes them back where they are defined so the file is the truth
again (commit the result).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from conveyor.cli import render
from conveyor.cli.context import Context
from conveyor.cli.options import json_option, pass_ctx
from conveyor.errors import UsageError

REASON = click.option(
    "--reason", "-m", required=True, help="Why (it goes on the ledger with the change)."
)
ENV = click.option("--env", "env", metavar="ENV", help="The environment to change.")


@click.group()
def flag() -> None:
    """Feature flags: list, show, on/off (--all: kill switch), rollout, rules, history, drift."""


@flag.command("list")
@json_option
@pass_ctx
def list_flags(ctx: Context, as_json: bool) -> None:
    """Every flag with its state per environment."""
    found: list[dict[str, Any]] = ctx.client().get("/api/v1/flags")["flags"]
    if as_json:
        render.emit_json(found)
        return
    console = render.out()
    if not found:
        console.print("no flags (define them under flags: in conveyor.yaml)")
        return
    for item in found:
        console.print(_summary_line(item), highlight=False)


@flag.command("show")
@click.argument("key", metavar="FLAG")
@json_option
@pass_ctx
def show(ctx: Context, key: str, as_json: bool) -> None:
    """One flag: variants, each environment's rules and rollout, drift from the file."""
    shown: dict[str, Any] = ctx.client().get(f"/api/v1/flags/{key}")
    if as_json:
        render.emit_json(shown)
        return
    console = render.out()
    console.print(_summary_line(shown), highlight=False)
    console.print(
        render.esc(
            "variants: "
            + ", ".join(f"{k}={json.dumps(v)}" for k, v in shown["variants"].items())
            + f"; default {shown['default']}, off {shown['off']}"
        )
    )
    for env, state in shown["definition"]["environments"].items():
        console.print(render.esc(f"  {env}: {json.dumps(state, sort_keys=True)}"))
    if shown.get("drift"):
        console.print("[yellow]differs from conveyor.yaml[/] (live changes win):")
        for change in shown["drift"]:
            console.print(render.esc("  " + _change_line(change)))
    for rollout in shown.get("rollouts") or []:
        console.print(render.esc(_rollout_line(rollout)))


@flag.command("on")
@click.argument("key", metavar="FLAG")
@click.option("--env", "env", metavar="ENV", required=True, help="The environment to change.")
@REASON
@json_option
@pass_ctx
def turn_on(ctx: Context, key: str, env: str, reason: str, as_json: bool) -> None:
    """Turn FLAG on in ENV."""
    body = {"env": env, "on": True, "reason": reason}
    _report(ctx.client().post(f"/api/v1/flags/{key}/state", body), as_json)


@flag.command("off")
@click.argument("key", metavar="FLAG")
@ENV
@click.option(
    "--all", "everywhere", is_flag=True, help="The kill switch: off in every environment."
)
@REASON
@json_option
@pass_ctx
def turn_off(
    ctx: Context, key: str, env: str | None, everywhere: bool, reason: str, as_json: bool
) -> None:
    """Turn FLAG off in ENV, or everywhere with --all (SDKs follow within one sync interval)."""
    if everywhere == (env is not None):
        raise UsageError("name one environment (--env ENV) or all of them (--all)")
    client = ctx.client()
    if everywhere:
        _report(client.post(f"/api/v1/flags/{key}/kill", {"reason": reason}), as_json)
    else:
        body = {"env": env, "on": False, "reason": reason}
        _report(client.post(f"/api/v1/flags/{key}/state", body), as_json)


@flag.command("rollout")
@click.argument("key", metavar="FLAG")
@click.argument("percentage", metavar="PERCENT", required=False)
@click.option("--env", "env", metavar="ENV", required=True, help="The environment to change.")
@click.option("--variant", help="The variant rolled out (default: the flag's default).")
@click.option("--stickiness", metavar="ATTRIBUTE", help="Bucket users by (default targetingKey).")
@click.option(
    "--steps", metavar="P1,P2,...", help="A guarded rollout: walk these percentages like a canary."
)
@click.option("--analysis", metavar="NAME", help="Judge each step (errors: variant vs control).")
@click.option("--interval", default="30s", show_default=True, help="Time per guarded step.")
@REASON
@json_option
@pass_ctx
def rollout(
    ctx: Context,
    key: str,
    percentage: str | None,
    env: str,
    variant: str | None,
    stickiness: str | None,
    steps: str | None,
    analysis: str | None,
    interval: str,
    reason: str,
    as_json: bool,
) -> None:
    """Serve FLAG's variant to PERCENT of users in ENV (sticky: growing it only adds users),
    or walk --steps 1%,10%,50%,100% guarded by --analysis errors."""
    client = ctx.client()
    if steps is not None:
        from conveyor.config.durations import parse_duration

        body: dict[str, Any] = {
            "env": env,
            "steps": [_percent(s) for s in steps.split(",") if s.strip()],
            "analysis": analysis or "errors",
            "interval": parse_duration(interval, positive=True),
            "variant": variant,
            "reason": reason,
        }
        started = client.post(f"/api/v1/flags/{key}/guarded", body)
        if as_json:
            render.emit_json(started)
            return
        render.out().print(render.esc(_rollout_line(started)))
        return
    if percentage is None:
        raise UsageError(
            "give a percentage (25%) or --steps", hint="conveyor flag rollout F 25% --env E"
        )
    body = {
        "env": env,
        "percentage": _percent(percentage),
        "variant": variant,
        "stickiness": stickiness,
        "reason": reason,
    }
    _report(client.post(f"/api/v1/flags/{key}/rollout", body), as_json)


@flag.command("set-rule")
@click.argument("key", metavar="FLAG")
@click.option("--env", "env", metavar="ENV", required=True, help="The environment to change.")
@click.option(
    "--when",
    "conditions",
    multiple=True,
    metavar="ATTR:OP:VALUE[,VALUE]",
    help="A condition, e.g. email:ends_with:@corp.com (repeatable: all must hold).",
)
@click.option("--segment", "segments", multiple=True, help="A segment the user must be in.")
@click.option("--serve", metavar="VARIANT", help="The variant the rule serves.")
@click.option("--append", is_flag=True, help="Add the rule after the existing ones.")
@click.option("--clear", is_flag=True, help="Remove every rule in ENV.")
@click.option(
    "--file",
    "rules_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Set ENV's whole rule list from a YAML/JSON file (a list of rules).",
)
@REASON
@json_option
@pass_ctx
def set_rule(
    ctx: Context,
    key: str,
    env: str,
    conditions: tuple[str, ...],
    segments: tuple[str, ...],
    serve: str | None,
    append: bool,
    clear: bool,
    rules_file: Path | None,
    reason: str,
    as_json: bool,
) -> None:
    """Set FLAG's targeting rules in ENV: one rule from --when/--segment/--serve, a list
    from --file, or none (--clear)."""
    client = ctx.client()
    rules: list[Any]
    if clear:
        rules = []
    elif rules_file is not None:
        from conveyor.config.source import read_yaml

        if rules_file.stat().st_size > 1024 * 1024:
            raise UsageError(f"{rules_file} is over 1 MiB")
        loaded = read_yaml(rules_file.read_text(encoding="utf-8"), str(rules_file)).plain()
        if not isinstance(loaded, list):
            raise UsageError(f"{rules_file} must hold a list of rules")
        rules = loaded
    else:
        if serve is None or not (conditions or segments):
            raise UsageError(
                "a rule needs --serve VARIANT and at least one --when or --segment",
                hint="--when email:ends_with:@corp.com --serve on",
            )
        rule: dict[str, Any] = {"serve": serve}
        if conditions:
            rule["when"] = [_condition(c) for c in conditions]
        if segments:
            rule["segments"] = list(segments)
        rules = [rule]
        if append:
            shown = client.get(f"/api/v1/flags/{key}")
            existing = shown["definition"]["environments"].get(env, {}).get("rules", [])
            rules = [*existing, rule]
    body = {"env": env, "rules": rules, "reason": reason}
    _report(client.post(f"/api/v1/flags/{key}/rules", body), as_json)


@flag.command("reset")
@click.argument("key", metavar="FLAG")
@REASON
@json_option
@pass_ctx
def reset(ctx: Context, key: str, reason: str, as_json: bool) -> None:
    """Drop FLAG's live changes: conveyor.yaml's definition is in force again."""
    _report(ctx.client().post(f"/api/v1/flags/{key}/reset", {"reason": reason}), as_json)


@flag.command("history")
@click.argument("key", metavar="FLAG")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 5000))
@json_option
@pass_ctx
def history(ctx: Context, key: str, limit: int, as_json: bool) -> None:
    """Every change of FLAG: when, who, where, why, and what changed."""
    events: list[dict[str, Any]] = ctx.client().get(f"/api/v1/flags/{key}/history", limit=limit)[
        "events"
    ]
    if as_json:
        render.emit_json(events)
        return
    console = render.out()
    if not events:
        console.print(f"no changes of {render.esc(key)} on the ledger")
    for event in events:
        details = event["details"]
        where = event.get("env") or "all environments"
        console.print(
            render.esc(
                f"{render.when(event['at'])}  #{event['seq']} {event['kind']} by {event['actor']} "
                f"in {where}: {details.get('reason', '')}"
            ),
            highlight=False,
        )
        for change in details.get("diff") or []:
            console.print(render.esc("    " + _change_line(change)), highlight=False)


@flag.command("drift")
@click.option("--write", is_flag=True, help="Write live definitions back into the files.")
@json_option
@pass_ctx
def drift(ctx: Context, write: bool, as_json: bool) -> None:
    """Flags changed live that differ from conveyor.yaml (live wins); --write writes them back."""
    found: list[dict[str, Any]] = ctx.client().get("/api/v1/flags/drift")["drift"]
    written: list[str] = []
    if write:
        from conveyor.config.flags import write_back

        config = ctx.config_file()
        for item in found:
            written.append(str(write_back(config, item["key"], item["definition"])))
    if as_json:
        render.emit_json({"drift": found, "written": written})
        return
    console = render.out()
    if not found:
        console.print("no drift: every flag is as conveyor.yaml defines it")
        return
    for item in found:
        console.print(render.esc(f"{item['key']} (live revision {item['revision']}):"))
        for change in item["changes"]:
            console.print(render.esc("  " + _change_line(change)), highlight=False)
    for path in written:
        console.print(f"[green]wrote[/] {render.esc(path)}")


def _percent(text: str) -> int:
    raw = text.strip().removesuffix("%")
    if not raw.isdigit() or not 0 <= int(raw) <= 100:
        raise UsageError(f"{text!r} is not a percentage", hint="a whole number 0-100, e.g. 25%")
    return int(raw)


def _condition(text: str) -> dict[str, Any]:
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise UsageError(
            f"{text!r} is not ATTR:OP:VALUE",
            hint="e.g. email:ends_with:@corp.com or plan:in:gold,silver",
        )
    attribute, op, values = parts
    return {"attribute": attribute, "op": op, "values": values.split(",")}


def _report(answer: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        render.emit_json(answer)
        return
    console = render.out()
    if not answer.get("changed", True):
        console.print(render.esc(f"{answer['flag']}: nothing to change"))
        return
    console.print(
        f"[green]changed[/] {render.esc(answer['flag'])} (revision {answer.get('revision')})"
    )
    for change in answer.get("changes") or []:
        console.print(render.esc("  " + _change_line(change)), highlight=False)


def _summary_line(item: Mapping[str, Any]) -> str:
    envs = []
    for env, state in item["environments"].items():
        text = "on" if state["on"] else "off"
        if state["on"] and state.get("rollout") is not None:
            text += f" {state['rollout']}%"
        if state["on"] and state.get("rules"):
            text += f" +{state['rules']} rules"
        envs.append(f"{env}: {text}")
    source = " (live, differs from file)" if item.get("drifted") else ""
    return render.esc(f"{item['key']} [{item['kind']}]{source}  " + "  ".join(envs))


def _change_line(change: Mapping[str, Any]) -> str:
    return f"{change['path']}: {json.dumps(change['before'])} -> {json.dumps(change['after'])}"


def _rollout_line(rollout: Mapping[str, Any]) -> str:
    status: Sequence[Any] | Mapping[str, Any] = rollout.get("status") or {}
    spec = rollout.get("spec") or {}
    assert isinstance(status, Mapping)
    return (
        f"guarded rollout #{rollout['id']} of {rollout['flag']} in {rollout['env']}: "
        f"{rollout['phase']}, step {status.get('step', 0) + 1}/{len(spec.get('steps', []))} "
        f"at {status.get('percentage', 0)}% {status.get('message', '')}"
    )
