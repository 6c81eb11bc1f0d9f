"""An OpenFeature provider over ``FlagsClient``: the standard API, Conveyor's evaluation.

    from openfeature import api
    from conveyor.flags import FlagsClient
    from conveyor.flags.openfeature import ConveyorProvider

    api.set_provider(ConveyorProvider(FlagsClient(relay, key=key, env="production")))
    client = api.get_client()
    client.get_boolean_value("new-checkout", False, EvaluationContext("user-42"))

* ``resolve_*_details`` evaluate in process and pass the variant and reason through
  (``STATIC``, ``TARGETING_MATCH``, ``SPLIT``, ``DEFAULT``, ``DISABLED``); an unknown flag
  or a type mismatch is the caller's default with ``ERROR`` and OpenFeature's error code.
* The evaluation context becomes the attributes rules see, its targeting key as
  ``targetingKey`` (the default stickiness of rollouts).
* Provider events follow the client: ``PROVIDER_READY`` once a flag set is held (bootstrap
  or relay), ``PROVIDER_CONFIGURATION_CHANGED`` with the changed flag keys,
  ``PROVIDER_STALE`` when the relay has not confirmed the set for ``stale_after`` seconds,
  ``PROVIDER_ERROR`` when syncing fails (evaluation continues from the last set).
* ``track("request" | "error", context)`` reports a request's outcome for guarded
  rollouts (``FlagsClient.report``); hooks passed in run as provider hooks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from conveyor.flags.client import Details, FlagsClient

_ERRORS = {code.value: code for code in ErrorCode}


class ConveyorProvider(AbstractProvider):
    def __init__(self, client: FlagsClient, hooks: Sequence[Hook] = ()) -> None:
        super().__init__()
        self.client = client
        self._hooks = list(hooks)
        client.on("ready", self._ready)
        client.on("changed", self._changed)
        client.on("stale", self._stale)
        client.on("error", self._error)

    def get_metadata(self) -> Metadata:
        return Metadata(name="conveyor")

    def get_provider_hooks(self) -> list[Hook]:
        return self._hooks

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Ready (the SDK then emits READY) when a set is held, after one sync if none is;
        otherwise the provider starts in ERROR, callers get their defaults, and READY
        follows the first successful sync."""
        if self.client.source == "empty":
            self.client.sync_now()
        if self.client.source == "empty":
            raise ProviderNotReadyError(
                "no flag set yet (relay unreachable, no bootstrap): defaults answer"
            )

    def shutdown(self) -> None:
        self.client.close()

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        self.client.report(_context(evaluation_context), error=tracking_event_name == "error")

    # --- resolution -------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return _details(
            self.client.details(flag_key, default_value, _context(evaluation_context), "boolean")
        )

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return _details(
            self.client.details(flag_key, default_value, _context(evaluation_context), "string")
        )

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        found = self.client.details(flag_key, default_value, _context(evaluation_context), "number")
        if found.error is None and not (
            isinstance(found.value, int) or float(found.value).is_integer()
        ):
            return FlagResolutionDetails(
                default_value,
                error_code=ErrorCode.TYPE_MISMATCH,
                error_message=f"{flag_key!r} is not a whole number",
                reason="ERROR",
            )
        if found.error is None:
            found = Details(int(found.value), found.variant, found.reason)
        return _details(found)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        found = self.client.details(flag_key, default_value, _context(evaluation_context), "number")
        if found.error is None:
            found = Details(float(found.value), found.variant, found.reason)
        return _details(found)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return _details(
            self.client.details(flag_key, default_value, _context(evaluation_context), "json")
        )

    # --- events -------------------------------------------------------------------------

    def _ready(self, event: str, details: Mapping[str, Any]) -> None:
        self.emit_provider_ready(ProviderEventDetails(message="flags from the relay"))

    def _changed(self, event: str, details: Mapping[str, Any]) -> None:
        self.emit_provider_configuration_changed(
            ProviderEventDetails(flags_changed=list(details.get("flags") or []))
        )

    def _stale(self, event: str, details: Mapping[str, Any]) -> None:
        self.emit_provider_stale(
            ProviderEventDetails(message=f"flags not confirmed for {details.get('age')} s")
        )

    def _error(self, event: str, details: Mapping[str, Any]) -> None:
        self.emit_provider_error(
            ProviderEventDetails(message=str(details.get("message")), error_code=ErrorCode.GENERAL)
        )


def _context(context: EvaluationContext | None) -> Mapping[str, Any]:
    if context is None:
        return {}
    if context.targeting_key is None:
        return context.attributes
    return {**context.attributes, "targetingKey": context.targeting_key}


def _details(found: Details) -> FlagResolutionDetails[Any]:
    if found.error is not None:
        return FlagResolutionDetails(
            found.value,
            error_code=_ERRORS.get(found.error, ErrorCode.GENERAL),
            error_message=found.message,
            reason="ERROR",
        )
    return FlagResolutionDetails(found.value, reason=found.reason, variant=found.variant)
