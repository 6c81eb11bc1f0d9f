"""Flags and segments as frozen records, and the one parser from their JSON form.

A flag has typed **variants** (``boolean``: ``on``/``off`` by default; ``string``,
``number`` and ``json``: named values), the variant it serves when on and nothing else
decides (``default``) and the one it serves when off (``off``), and a state per
**environment**: on or off, targeting **rules** tried in order, and a sticky percentage
**rollout**. A rule holds when all its conditions and all the **segments** it names hold;
it then serves a variant, or a rollout (users outside it fall through to the next rule).

The same JSON shape is written in conveyor.yaml (``flags:``), stored for live changes,
published to relays and read by SDKs, and ``flag_from_json`` is its only reader: whatever
a flag came through, it was checked the same way, with the same limits. A problem raises
``FlagDefinitionError`` naming the path inside the flag (``environments.production.rules.0
.when.1.op``), which the config loader turns into a file and line and the API into a 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.flags.conditions import (
    OPERATORS,
    ConditionError,
    Scalar,
    compile_condition,
)

KINDS = ("boolean", "string", "number", "json")
KEY = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_VARIANTS = 50
MAX_RULES = 100
MAX_CONDITIONS = 20
MAX_VALUES = 1000
MAX_SEGMENTS_PER_RULE = 10
MAX_ENVIRONMENTS = 50
MAX_VALUE_BYTES = 16 * 1024
MAX_DESCRIPTION = 1000
DEFAULT_STICKINESS = "targetingKey"

Path = tuple[str | int, ...]


class FlagDefinitionError(ValueError):
    """A flag or segment that cannot be used: where in it, what, and how to fix it."""

    def __init__(self, path: Path, message: str, hint: str) -> None:
        super().__init__(f"{'.'.join(map(str, path)) or '(flag)'}: {message}")
        self.path = path
        self.message = message
        self.hint = hint


@dataclass(frozen=True, slots=True)
class Condition:
    attribute: str
    op: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Rollout:
    """``percentage`` (0-100) of users, by the bucket of their ``stickiness`` attribute, get
    ``variant``; the others get ``otherwise`` (the flag's off variant when unset)."""

    percentage: int
    variant: str
    stickiness: str = DEFAULT_STICKINESS
    otherwise: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    conditions: tuple[Condition, ...] = ()
    segments: tuple[str, ...] = ()
    serve: str | None = None
    rollout: Rollout | None = None
    name: str = ""


@dataclass(frozen=True, slots=True)
class EnvState:
    on: bool = False
    rules: tuple[Rule, ...] = ()
    rollout: Rollout | None = None
    serve: str | None = None


OFF = EnvState()


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    conditions: tuple[Condition, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Flag:
    key: str
    kind: str
    variants: Mapping[str, Any]
    default: str
    off: str
    environments: Mapping[str, EnvState] = field(default_factory=dict)
    description: str = ""

    def state(self, env: str) -> EnvState:
        """The flag's state in ``env``; an environment it does not name has it off."""
        return self.environments.get(env, OFF)

    def with_state(self, env: str, state: EnvState) -> Flag:
        envs = dict(self.environments)
        envs[env] = state
        return Flag(
            self.key, self.kind, self.variants, self.default, self.off, envs, self.description
        )

    def for_env(self, env: str) -> Flag:
        """The flag as one environment's document carries it: that environment's state only."""
        return Flag(
            self.key,
            self.kind,
            self.variants,
            self.default,
            self.off,
            {env: self.state(env)},
            self.description,
        )


# --- JSON -> records -----------------------------------------------------------------------


def flag_from_json(key: str, data: object, segments: Sequence[str] | None = None) -> Flag:
    """Parse and check one flag; ``segments`` (when given) are the names rules may use."""
    _key(key, (), "flag")
    obj = _mapping(data, (), ("kind", "variants", "default", "off", "environments", "description"))
    kind = obj.get("kind", "boolean")
    if kind not in KINDS:
        raise FlagDefinitionError(
            ("kind",), f"unknown kind {kind!r}", "one of: " + ", ".join(KINDS)
        )
    variants = _variants(kind, obj.get("variants"))
    names = set(variants)
    default = obj.get("default", "on" if kind == "boolean" else None)
    if default is None:
        raise FlagDefinitionError(
            ("default",), "a non-boolean flag names its default variant", "default: VARIANT"
        )
    _variant(default, names, ("default",))
    off = obj.get("off", "off" if kind == "boolean" else default)
    _variant(off, names, ("off",))
    envs_raw = _mapping(obj.get("environments", {}), ("environments",), None)
    if len(envs_raw) > MAX_ENVIRONMENTS:
        raise FlagDefinitionError(
            ("environments",), f"more than {MAX_ENVIRONMENTS} environments", "name fewer"
        )
    envs = {
        env: _env_state(value, names, segments, ("environments", env))
        for env, value in envs_raw.items()
    }
    for env in envs:
        _key(env, ("environments", env), "environment")
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise FlagDefinitionError(
            ("description",),
            f"the description is text of at most {MAX_DESCRIPTION} characters",
            "shorten it",
        )
    return Flag(key, kind, variants, default, off, envs, description)


def segment_from_json(name: str, data: object) -> Segment:
    _key(name, (), "segment")
    obj = _mapping(data, (), ("when", "description"))
    description = obj.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise FlagDefinitionError(("description",), "the description is short text", "shorten it")
    conditions = _conditions(obj.get("when", []), ("when",))
    if not conditions:
        raise FlagDefinitionError(
            ("when",), "a segment needs at least one condition", "when: [{attribute, op, values}]"
        )
    return Segment(name, conditions, description)


def _key(value: object, path: Path, what: str) -> None:
    if not isinstance(value, str) or not KEY.fullmatch(value):
        raise FlagDefinitionError(
            path,
            f"{value!r} is not a {what} name",
            "lowercase letters, digits, '-', '_' and '.', starting with a letter or digit, "
            "at most 100 characters",
        )


def _mapping(data: object, path: Path, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise FlagDefinitionError(
            path, f"expected a mapping, got {type(data).__name__}", "KEY: VALUE"
        )
    if allowed is not None:
        for name in data:
            if name not in allowed:
                raise FlagDefinitionError(
                    (*path, str(name)), f"unknown field {name!r}", "allowed: " + ", ".join(allowed)
                )
    return data


def _variants(kind: str, raw: object) -> dict[str, Any]:
    if raw is None:
        if kind == "boolean":
            return {"on": True, "off": False}
        raise FlagDefinitionError(
            ("variants",), f"a {kind} flag lists its variants", "variants: {NAME: VALUE, ...}"
        )
    variants = _mapping(raw, ("variants",), None)
    if not variants or len(variants) > MAX_VARIANTS:
        raise FlagDefinitionError(
            ("variants",), f"a flag has 1 to {MAX_VARIANTS} variants", "variants: {NAME: VALUE}"
        )
    for name, value in variants.items():
        path: Path = ("variants", name)
        _key(name, path, "variant")
        if kind == "boolean" and not isinstance(value, bool):
            raise FlagDefinitionError(path, f"{value!r} is not true or false", "a boolean flag")
        if kind == "string" and not isinstance(value, str):
            raise FlagDefinitionError(path, f"{value!r} is not text", "quote it: 'VALUE'")
        if kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise FlagDefinitionError(path, f"{value!r} is not a number", "e.g. 42 or 0.5")
        if kind == "json" and not isinstance(value, dict | list):
            raise FlagDefinitionError(path, "a json variant is an object or a list", "{a: 1}")
        if len(json.dumps(value, default=str)) > MAX_VALUE_BYTES:
            raise FlagDefinitionError(
                path, f"the value is over {MAX_VALUE_BYTES} bytes", "shrink it"
            )
    return dict(variants)


def _variant(value: object, names: set[str], path: Path) -> str:
    if not isinstance(value, str) or value not in names:
        raise FlagDefinitionError(
            path,
            f"{value!r} is not one of the flag's variants",
            "one of: " + ", ".join(sorted(names)),
        )
    return value


def _env_state(
    data: object, names: set[str], segments: Sequence[str] | None, path: Path
) -> EnvState:
    if data is None:
        return OFF
    obj = _mapping(data, path, ("on", "rules", "rollout", "serve"))
    on = obj.get("on", False)
    if not isinstance(on, bool):
        raise FlagDefinitionError((*path, "on"), f"{on!r} is not true or false", "on: true")
    rules_raw = obj.get("rules", [])
    if not isinstance(rules_raw, list) or len(rules_raw) > MAX_RULES:
        raise FlagDefinitionError(
            (*path, "rules"), f"rules is a list of at most {MAX_RULES}", "rules: [...]"
        )
    rules = tuple(_rule(r, names, segments, (*path, "rules", i)) for i, r in enumerate(rules_raw))
    rollout = _rollout(obj["rollout"], names, (*path, "rollout")) if obj.get("rollout") else None
    serve = obj.get("serve")
    if serve is not None:
        _variant(serve, names, (*path, "serve"))
    return EnvState(on, rules, rollout, serve)


def _rule(data: object, names: set[str], segments: Sequence[str] | None, path: Path) -> Rule:
    obj = _mapping(data, path, ("name", "when", "segments", "serve", "rollout"))
    name = obj.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise FlagDefinitionError((*path, "name"), "a rule's name is short text", "name: beta")
    conditions = _conditions(obj.get("when", []), (*path, "when"))
    used = obj.get("segments", [])
    if not isinstance(used, list) or len(used) > MAX_SEGMENTS_PER_RULE:
        raise FlagDefinitionError(
            (*path, "segments"),
            f"segments is a list of at most {MAX_SEGMENTS_PER_RULE} names",
            "segments: [beta-testers]",
        )
    for i, segment in enumerate(used):
        if not isinstance(segment, str) or (segments is not None and segment not in segments):
            known = ", ".join(sorted(segments or ())) or "none are defined"
            raise FlagDefinitionError(
                (*path, "segments", i), f"unknown segment {segment!r}", f"defined: {known}"
            )
    if not conditions and not used:
        raise FlagDefinitionError(
            path, "a rule needs conditions (when:) or segments", "when: [{attribute, op, values}]"
        )
    serve, rollout = obj.get("serve"), obj.get("rollout")
    if (serve is None) == (rollout is None):
        raise FlagDefinitionError(
            path, "a rule serves a variant or a rollout (one of them)", "serve: VARIANT"
        )
    if serve is not None:
        _variant(serve, names, (*path, "serve"))
    parsed = _rollout(rollout, names, (*path, "rollout")) if rollout is not None else None
    return Rule(conditions, tuple(used), serve, parsed, name)


def _conditions(data: object, path: Path) -> tuple[Condition, ...]:
    if not isinstance(data, list) or len(data) > MAX_CONDITIONS:
        raise FlagDefinitionError(
            path,
            f"a list of at most {MAX_CONDITIONS} conditions",
            "when: [{attribute, op, values}]",
        )
    return tuple(_condition(c, (*path, i)) for i, c in enumerate(data))


def _condition(data: object, path: Path) -> Condition:
    obj = _mapping(data, path, ("attribute", "op", "values", "value"))
    attribute = obj.get("attribute")
    if not isinstance(attribute, str) or not ATTRIBUTE.fullmatch(attribute):
        raise FlagDefinitionError(
            (*path, "attribute"), f"{attribute!r} is not an attribute name", "attribute: email"
        )
    op = obj.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise FlagDefinitionError(
            (*path, "op"), f"unknown operator {op!r}", "one of: " + ", ".join(OPERATORS)
        )
    if "value" in obj and "values" in obj:
        raise FlagDefinitionError(path, "give value or values, not both", "values: [A, B]")
    raw = [obj["value"]] if "value" in obj else obj.get("values")
    if not isinstance(raw, list) or len(raw) > MAX_VALUES:
        raise FlagDefinitionError(
            (*path, "values"), f"values is a list of at most {MAX_VALUES}", "values: [A, B]"
        )
    for i, value in enumerate(raw):
        if not isinstance(value, str | int | float | bool) or (
            isinstance(value, str) and len(value) > 1024
        ):
            raise FlagDefinitionError(
                (*path, "values", i),
                "each value is text (at most 1024 characters), a number or true/false",
                "values: [A, B]",
            )
    try:
        compile_condition(attribute, op, raw)
    except ConditionError as exc:
        raise FlagDefinitionError((*path, "values"), exc.message, exc.hint) from None
    return Condition(attribute, op, tuple(raw))


def _rollout(data: object, names: set[str], path: Path) -> Rollout:
    obj = _mapping(data, path, ("percentage", "variant", "stickiness", "otherwise"))
    percentage = obj.get("percentage")
    if (
        isinstance(percentage, bool)
        or not isinstance(percentage, int)
        or not 0 <= percentage <= 100
    ):
        raise FlagDefinitionError(
            (*path, "percentage"),
            f"{percentage!r} is not a whole percentage from 0 to 100",
            "percentage: 25",
        )
    variant = _variant(obj.get("variant"), names, (*path, "variant"))
    stickiness = obj.get("stickiness", DEFAULT_STICKINESS)
    if not isinstance(stickiness, str) or not ATTRIBUTE.fullmatch(stickiness):
        raise FlagDefinitionError(
            (*path, "stickiness"), f"{stickiness!r} is not an attribute name", "stickiness: userId"
        )
    otherwise = obj.get("otherwise")
    if otherwise is not None:
        _variant(otherwise, names, (*path, "otherwise"))
    return Rollout(percentage, variant, stickiness, otherwise)


# --- records -> JSON -----------------------------------------------------------------------


def flag_to_json(flag: Flag) -> dict[str, Any]:
    """The canonical JSON of a flag (what ``flag_from_json`` reads back unchanged)."""
    out: dict[str, Any] = {
        "kind": flag.kind,
        "variants": dict(flag.variants),
        "default": flag.default,
        "off": flag.off,
        "environments": {env: state_to_json(s) for env, s in sorted(flag.environments.items())},
    }
    if flag.description:
        out["description"] = flag.description
    return out


def state_to_json(state: EnvState) -> dict[str, Any]:
    out: dict[str, Any] = {"on": state.on}
    if state.rules:
        out["rules"] = [_rule_json(r) for r in state.rules]
    if state.rollout is not None:
        out["rollout"] = _rollout_json(state.rollout)
    if state.serve is not None:
        out["serve"] = state.serve
    return out


def segment_to_json(segment: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {"when": [_condition_json(c) for c in segment.conditions]}
    if segment.description:
        out["description"] = segment.description
    return out


def _rule_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.name:
        out["name"] = rule.name
    if rule.conditions:
        out["when"] = [_condition_json(c) for c in rule.conditions]
    if rule.segments:
        out["segments"] = list(rule.segments)
    if rule.serve is not None:
        out["serve"] = rule.serve
    if rule.rollout is not None:
        out["rollout"] = _rollout_json(rule.rollout)
    return out


def _condition_json(condition: Condition) -> dict[str, Any]:
    return {"attribute": condition.attribute, "op": condition.op, "values": list(condition.values)}


def _rollout_json(rollout: Rollout) -> dict[str, Any]:
    out: dict[str, Any] = {"percentage": rollout.percentage, "variant": rollout.variant}
    if rollout.stickiness != DEFAULT_STICKINESS:
        out["stickiness"] = rollout.stickiness
    if rollout.otherwise is not None:
        out["otherwise"] = rollout.otherwise
    return out


def document(
    env: str,
    flags: Mapping[str, Flag],
    segments: Mapping[str, Segment],
    revision: int,
    guarded: Sequence[str] = (),
) -> dict[str, Any]:
    """What the server publishes for one environment: its flags (that environment's state
        only) and the segments they use, and the flags under a guarded rollout (SDKs report
    outcomes for those). No secrets: only what SDKs evaluate."""
    used = {s for f in flags.values() for r in f.state(env).rules for s in r.segments}
    return {
        "env": env,
        "revision": revision,
        "guarded": sorted(guarded),
        "flags": {key: flag_to_json(flags[key].for_env(env)) for key in sorted(flags)},
        "segments": {
            name: segment_to_json(segments[name]) for name in sorted(used) if name in segments
        },
    }
