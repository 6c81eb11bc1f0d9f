"""Feature flags, decided purely: the model, its JSON form, targeting, sticky rollouts.

``model`` holds the records and the one parser from JSON (config, store, the documents the
server publishes and SDKs read all use it); ``conditions`` the operators on context
attributes (semver, numbers, a guarded regex); ``hashing`` the Unleash-compatible bucket;
``evaluate`` compiles a flag for one environment into a closure SDKs call millions of times
a second; ``diff`` says what a change changed; ``guarded`` decides a guarded rollout's next
step. Nothing here does I/O or reads a clock.
"""

from conveyor.core.flags.evaluate import Compiled, Resolution, compile_document, compile_flag
from conveyor.core.flags.hashing import in_rollout, normalized_value
from conveyor.core.flags.model import (
    Condition,
    EnvState,
    Flag,
    FlagDefinitionError,
    Rollout,
    Rule,
    Segment,
    document,
    flag_from_json,
    flag_to_json,
    segment_from_json,
    segment_to_json,
)

__all__ = [
    "Compiled",
    "Condition",
    "EnvState",
    "Flag",
    "FlagDefinitionError",
    "Resolution",
    "Rollout",
    "Rule",
    "Segment",
    "compile_document",
    "compile_flag",
    "document",
    "flag_from_json",
    "flag_to_json",
    "in_rollout",
    "normalized_value",
    "segment_from_json",
    "segment_to_json",
]
