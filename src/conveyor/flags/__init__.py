"""Conveyor's Python flag SDK: evaluate in process, from a snapshot synced in the background.

    from conveyor.flags import FlagsClient

    flags = FlagsClient("http://127.0.0.1:8787", key="sdk-key", env="production",
                        bootstrap="flags-production.json")
    if flags.bool_value("new-checkout", False, {"targetingKey": user.id}):
        ...

Evaluation never touches the network: it reads the last snapshot (a dictionary of
compiled flags) and runs the flag's closure. A daemon thread polls the relay with
``If-None-Match`` every ``interval`` and swaps the snapshot when the set changed. Until a
sync succeeds, the bootstrap file (a document the relay serves, e.g. saved by
``curl``) or the defaults the caller passes answer. ``staleness`` says how old the
snapshot is; ``on("stale"|"changed"|"error"|"ready", fn)`` tells listeners (the
OpenFeature provider turns them into provider events).

This package imports the core and the standard library only (an import contract checks
it): it lives in applications, not in the server.
"""

from conveyor.flags.client import Details, FlagsClient

__all__ = ["Details", "FlagsClient"]
