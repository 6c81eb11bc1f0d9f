"""The OpenFeature provider through the real openfeature-sdk client: values, variants,
reasons, error codes, provider events and hooks."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.hook import Hook, HookContext

from conveyor.flags import FlagsClient
from conveyor.flags.openfeature import ConveyorProvider

from .relay_stub import set_server
from .test_client import DOC


class Seen(Hook):
    def __init__(self) -> None:
        self.flags: list[str] = []

    def before(self, hook_context: HookContext, hints: Any) -> None:
        self.flags.append(hook_context.flag_key)


def test_resolution_details_through_the_openfeature_client() -> None:
    hook = Seen()
    provider = ConveyorProvider(FlagsClient(None, env="production", bootstrap=DOC), hooks=[hook])
    api.set_provider_and_wait(provider, domain="resolution")
    client = api.get_client("resolution")
    try:
        banner = client.get_string_details("banner", "?")
        assert (banner.value, banner.variant, banner.reason) == ("HI", "loud", Reason.STATIC)
        split = client.get_boolean_details("checkout", False, EvaluationContext("user-7"))
        assert split.reason == Reason.SPLIT and split.variant in ("on", "off")
        assert client.get_integer_value("limit", 0) == 10
        assert client.get_object_value("layout", {}) == {"cols": 2}
        missing = client.get_boolean_details("nope", True)
        assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND
        assert missing.reason == Reason.ERROR
        wrong = client.get_boolean_details("banner", False)
        assert wrong.value is False and wrong.error_code == ErrorCode.TYPE_MISMATCH
        assert "banner" in hook.flags and "checkout" in hook.flags
    finally:
        api.clear_providers()


def _wait_for(seen: list[Any], event: ProviderEvent) -> list[EventDetails]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [d for e, d in seen if e == event]
        if found:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no {event} in {seen}")


def test_provider_events_follow_the_sync() -> None:
    seen: list[tuple[ProviderEvent, EventDetails]] = []
    handlers = {
        event: (lambda details, event=event: seen.append((event, details)))
        for event in ProviderEvent
    }
    with set_server() as (relay, url):
        relay.document = DOC
        flags = FlagsClient(url, env="production", interval=0.05, stale_after=0.3, start=False)
        provider = ConveyorProvider(flags)
        for event, handler in handlers.items():
            api.add_handler(event, handler)
        try:
            api.set_provider_and_wait(provider, domain="events")
            _wait_for(seen, ProviderEvent.PROVIDER_READY)
            relay.document = {
                **DOC,
                "flags": {k: v for k, v in DOC["flags"].items() if k != "limit"},
            }
            assert flags.sync_now()
            changed = _wait_for(seen, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
            assert changed[-1].flags_changed == ["limit"]
            relay.down = True
            assert not flags.sync_now()
            _wait_for(seen, ProviderEvent.PROVIDER_ERROR)
            time.sleep(0.35)
            flags._run_checks()
            _wait_for(seen, ProviderEvent.PROVIDER_STALE)
        finally:
            api.clear_providers()
            for event, handler in handlers.items():
                with contextlib.suppress(ValueError):  # clear_providers may have done it
                    api.remove_handler(event, handler)
