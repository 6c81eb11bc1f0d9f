"""In-process flag evaluations per second: Conveyor's SDK, through OpenFeature, and flagd.

Usage: python bench/flags_eval.py [--seconds 1.0] [--runs 5]

Three flags, defined once and written both as a Conveyor flag set and as a flagd flag
file (the same semantics):

* ``static``: a boolean flag, on, no targeting;
* ``rules``: three targeting rules (email ends_with, country in, app semver >=), the
  context matching the third, so all three are evaluated;
* ``rollout``: a 25% sticky rollout on ``targetingKey`` (flagd: ``fractional``).

Paths, measured in one process on one core, medians of ``--runs`` runs of ``--seconds``:

1. ``sdk``: ``FlagsClient.bool_value`` (Conveyor's SDK directly);
2. ``openfeature``: the OpenFeature client with ``ConveyorProvider``;
3. ``flagd``: the OpenFeature client with ``openfeature-provider-flagd`` in in-process
   mode (``ResolverType.FILE``, reading the flagd file), if it is installed.

Ratios are printed against flagd through the same OpenFeature client (the reference,
measured in the same run). Each rollout evaluation uses a different targeting key, so no
path can cache its way through it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.flags import FlagsClient

CONVEYOR_SET: dict[str, Any] = {
    "env": "bench",
    "flags": {
        "static": {"environments": {"bench": {"on": True}}},
        "rules": {
            "default": "off",
            "environments": {
                "bench": {
                    "on": True,
                    "rules": [
                        {
                            "when": [
                                {"attribute": "email", "op": "ends_with", "values": ["@corp.com"]}
                            ],
                            "serve": "on",
                        },
                        {
                            "when": [{"attribute": "country", "op": "in", "values": ["NL", "BE"]}],
                            "serve": "on",
                        },
                        {
                            "when": [{"attribute": "app", "op": "semver_gte", "values": ["2.0.0"]}],
                            "serve": "on",
                        },
                    ],
                }
            },
        },
        "rollout": {
            "environments": {"bench": {"on": True, "rollout": {"percentage": 25, "variant": "on"}}}
        },
    },
    "segments": {},
}

FLAGD_SET: dict[str, Any] = {
    "flags": {
        "static": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        },
        "rules": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {"ends_with": [{"var": "email"}, "@corp.com"]},
                    "on",
                    {"in": [{"var": "country"}, ["NL", "BE"]]},
                    "on",
                    {"sem_ver": [{"var": "app"}, ">=", "2.0.0"]},
                    "on",
                    "off",
                ]
            },
        },
        "rollout": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"fractional": [["on", 25], ["off", 75]]},
        },
    }
}

RULE_CONTEXT = {"email": "dana@example.org", "country": "DE", "app": "2.3.1"}


def rate(call: Callable[[int], object], seconds: float) -> float:
    """Calls per second of ``call(i)`` over about ``seconds`` (batches of 1000)."""
    done, i = 0, 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(1000):
            call(i)
            i += 1
        done += 1000
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def median_rate(call: Callable[[int], object], seconds: float, runs: int) -> float:
    return statistics.median(rate(call, seconds) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    from conveyor.flags.openfeature import ConveyorProvider

    sdk = FlagsClient(None, env="bench", bootstrap=CONVEYOR_SET)
    keys = [f"user-{i}" for i in range(100_000)]
    rollout_contexts = [{"targetingKey": k} for k in keys]
    of_rollout = [EvaluationContext(k) for k in keys]
    of_rules = EvaluationContext("u", RULE_CONTEXT)
    # Check every path agrees before timing it.
    assert sdk.bool_value("static", False) is True
    assert sdk.bool_value("rules", False, RULE_CONTEXT) is True
    share = sum(sdk.bool_value("rollout", False, c) for c in rollout_contexts[:20000]) / 20000
    assert 0.22 < share < 0.28, share

    api.set_provider(ConveyorProvider(sdk), domain="conveyor")
    conveyor_client = api.get_client("conveyor")
    n = len(keys)
    cases: dict[str, dict[str, Callable[[int], object]]] = {
        "static": {
            "sdk": lambda i: sdk.bool_value("static", False),
            "openfeature": lambda i: conveyor_client.get_boolean_value("static", False),
        },
        "rules": {
            "sdk": lambda i: sdk.bool_value("rules", False, RULE_CONTEXT),
            "openfeature": lambda i: conveyor_client.get_boolean_value("rules", False, of_rules),
        },
        "rollout": {
            "sdk": lambda i: sdk.bool_value("rollout", False, rollout_contexts[i % n]),
            "openfeature": lambda i: conveyor_client.get_boolean_value(
                "rollout", False, of_rollout[i % n]
            ),
        },
    }

    flagd_note = ""
    try:
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType
    except ImportError as exc:
        flagd_note = f"flagd provider not installed ({exc}); pip install openfeature-provider-flagd"
    else:
        folder = Path(tempfile.mkdtemp())
        path = folder / "flags.json"
        path.write_text(json.dumps(FLAGD_SET))
        provider = FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path)
        )
        api.set_provider_and_wait(provider, domain="flagd")
        flagd = api.get_client("flagd")
        assert flagd.get_boolean_value("static", False) is True
        assert flagd.get_boolean_value("rules", False, of_rules) is True
        cases["static"]["flagd"] = lambda i: flagd.get_boolean_value("static", False)
        cases["rules"]["flagd"] = lambda i: flagd.get_boolean_value("rules", False, of_rules)
        cases["rollout"]["flagd"] = lambda i: flagd.get_boolean_value(
            "rollout", False, of_rollout[i % n]
        )

    print(f"in-process evaluations/s, median of {args.runs} x {args.seconds}s, one core")
    print(f"{'case':<9} {'path':<12} {'evals/s':>12} {'vs flagd':>10}")
    for case, paths in cases.items():
        rates = {path: median_rate(call, args.seconds, args.runs) for path, call in paths.items()}
        reference = rates.get("flagd")
        for path, value in rates.items():
            ratio = f"{value / reference:9.1f}x" if reference else "        -"
            print(f"{case:<9} {path:<12} {value:12,.0f} {ratio}")
    if flagd_note:
        print(flagd_note)
    api.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
