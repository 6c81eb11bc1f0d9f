"""The provenance statement: exactly what a build claims, and which claims a deploy accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conveyor.artifacts.gitinfo import GitInfo
from conveyor.artifacts.provenance import (
    BUILD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    BuildFacts,
    check_subject,
    encode,
    statement,
    subject_digests,
)
from conveyor.errors import Refused

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def facts(**changes: Any) -> BuildFacts:
    values: dict[str, Any] = {
        "digest": DIGEST,
        "service": "catalog",
        "command": "make dist",
        "outputs": ("dist/",),
        "source": GitInfo(commit=COMMIT, branch="main", dirty=False),
        "source_uri": "git+file:///src/catalog",
        "files": 7,
        "size": 4096,
        "started": 1_700_000_000.0,
        "finished": 1_700_000_002.5,
        "builder_version": "1.2.3",
    }
    values.update(changes)
    return BuildFacts(**values)


def test_statement_is_in_toto_v1_with_slsa_provenance() -> None:
    stmt = statement(facts())
    assert stmt["_type"] == STATEMENT_TYPE == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == PREDICATE_TYPE == "https://slsa.dev/provenance/v1"
    assert stmt["subject"] == [{"name": "catalog.tar.gz", "digest": {"sha256": HEX}}]
    build = stmt["predicate"]["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    assert build["externalParameters"] == {
        "service": "catalog",
        "command": "make dist",
        "outputs": ["dist/"],
    }
    assert build["resolvedDependencies"] == [
        {
            "uri": "git+file:///src/catalog",
            "digest": {"sha1": COMMIT, "gitCommit": COMMIT},
            "annotations": {"dirty": False, "branch": "main"},
        }
    ]
    run = stmt["predicate"]["runDetails"]
    assert run["builder"] == {"id": "conveyor", "version": {"conveyor": "1.2.3"}}
    assert run["metadata"] == {
        "startedOn": "2023-11-14T22:13:20.000Z",
        "finishedOn": "2023-11-14T22:13:22.500Z",
    }
    assert run["byproducts"] == [{"name": "outputs", "annotations": {"files": 7, "size": 4096}}]


def test_dirty_and_unknown_sources_are_stated_not_hidden() -> None:
    dirty = statement(facts(source=GitInfo(COMMIT, None, True)))
    material = dirty["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert material["annotations"] == {"dirty": True, "branch": None}
    unknown = statement(facts(source=GitInfo(None, None, None)))
    material = unknown["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert "digest" not in material  # no commit: no digest is claimed
    assert material["annotations"]["dirty"] is None


def test_encoding_is_canonical() -> None:
    assert encode(statement(facts())) == encode(statement(facts()))
    assert json.loads(encode(statement(facts()))) == statement(facts())
    assert b" " not in encode({"b": 1, "a": [1, 2]}) and encode({"b": 1, "a": 2}) == (
        b'{"a":2,"b":1}'
    )


def test_check_subject_returns_the_statement_for_its_own_digest() -> None:
    assert check_subject(encode(statement(facts())), DIGEST) == statement(facts())


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "is not JSON"),
        (b"[1, 2]", "not an in-toto v1 statement"),
        (json.dumps({**statement(facts()), "_type": "x"}).encode(), "not an in-toto v1"),
        (
            json.dumps({**statement(facts()), "predicateType": "https://example/other"}).encode(),
            "not SLSA provenance v1",
        ),
        (encode(statement(facts(digest="sha256:" + "cd" * 32))), "describes another artifact"),
        (json.dumps({**statement(facts()), "subject": "nope"}).encode(), "no subject"),
    ],
    ids=["not-json", "not-object", "wrong-type", "wrong-predicate", "other-subject", "no-subject"],
)
def test_check_subject_refuses(payload: bytes, message: str) -> None:
    with pytest.raises(Refused) as caught:
        check_subject(payload, DIGEST)
    assert message in caught.value.message
    assert DIGEST in caught.value.message
    assert caught.value.hint is not None and "conveyor build" in caught.value.hint


def test_subject_digests_ignores_malformed_entries() -> None:
    stmt = {"subject": [{"digest": {"sha256": "aa"}}, {"digest": "x"}, 3, {"name": "n"}]}
    assert subject_digests(stmt) == {"aa"}
    assert subject_digests({}) == set()
