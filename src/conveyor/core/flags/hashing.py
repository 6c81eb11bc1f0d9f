"""The sticky bucket, computed exactly as Unleash computes it, so both agree on who is in.

Unleash's ``normalizedValue(id, groupId)`` is ``murmur3_x86_32("<groupId>:<id>", seed 0)``
as an unsigned 32-bit integer, ``% 100 + 1``: a bucket from 1 to 100. A user is in a
rollout of ``p`` percent when ``p > 0`` and their bucket is ``<= p``. Conveyor uses the
flag's key as the group id (Unleash's default ``groupId`` is the feature name) and the
value of the rollout's stickiness attribute as the id; the reference vectors
("gr1", "123") -> 73 and ("groupX", "999") -> 25 are Unleash's own client-specification
tests, and ``tests/core/flags/test_hashing.py`` checks them.

Because the bucket depends only on (flag, value), growing ``p`` only ever adds users:
whoever was in at 10% is still in at 50%.
"""

from __future__ import annotations

import mmh3

NORMALIZER = 100


def normalized_value(value: str, group: str, normalizer: int = NORMALIZER, seed: int = 0) -> int:
    """Unleash's bucket of ``value`` in ``group``: 1 .. ``normalizer``."""
    return int(mmh3.hash(f"{group}:{value}", seed, signed=False)) % normalizer + 1


def in_rollout(value: str, group: str, percentage: int) -> bool:
    """Is ``value`` among the first ``percentage`` percent of ``group``'s buckets?"""
    return percentage > 0 and normalized_value(value, group) <= percentage
