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
    WorkspaceFacts,
    check_subject,
    encode,
    statement,
    subject_digests,
)
from conveyor.errors import Refused, UsageError

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


WORKSPACE = WorkspaceFacts(
    mode="dirty", inputs=("src/**",), files=12, source_date_epoch=1_700_000_000
)


def test_the_workspace_is_stated_with_what_it_left_out() -> None:
    stmt = statement(facts(workspace=WORKSPACE))
    build = stmt["predicate"]["buildDefinition"]
    assert build["externalParameters"]["inputs"] == ["src/**"]
    assert build["internalParameters"]["workspace"] == {
        "mode": "dirty",
        "files": 12,
        "sourceDateEpoch": 1_700_000_000,
        "leftOut": "files git ignores, and tracked files deleted from the work tree; "
        "and every file not matching the build inputs",
    }
    clean = WorkspaceFacts(mode="clean", inputs=None, files=3, source_date_epoch=0)
    stmt = statement(facts(workspace=clean))
    assert "inputs" not in stmt["predicate"]["buildDefinition"]["externalParameters"]
    left_out = stmt["predicate"]["buildDefinition"]["internalParameters"]["workspace"]["leftOut"]
    assert "uncommitted changes" in left_out
    assert "internalParameters" not in statement(facts())["predicate"]["buildDefinition"]


@pytest.mark.parametrize(
    "built",
    [
        facts(),
        facts(workspace=WORKSPACE, pipeline={"run": "r1", "jobs": {"test": "success"}}),
        facts(source=GitInfo(None, None, None), started=0.0, finished=0.0, files=0, size=0),
        facts(source=GitInfo("ab" * 32, "feature/x", True)),  # a sha256 repository
        facts(workspace=WorkspaceFacts("copy", None, 0, 315532800)),
    ],
)
def test_facts_round_trip_through_json(built: BuildFacts) -> None:
    wire = json.loads(json.dumps(built.to_json()))
    assert BuildFacts.from_json(wire) == built
    assert statement(BuildFacts.from_json(wire)) == statement(built)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def wire(**changes: Any) -> dict[str, Any]:
    data = facts(workspace=WORKSPACE).to_json()
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            data[outer] = {**data[outer], inner: value}
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("not an object", "'build' must be a JSON object"),
        ({**wire(), "extra": 1}, "fields no Conveyor client sends: 'extra'"),
        (wire(service=None), "'build.service'"),
        (wire(service="Web Service"), "'build.service'"),
        (wire(service="a" * 129), "'build.service'"),
        (wire(command=""), "'build.command'"),
        (wire(command="x" * 70_000), "'build.command'"),
        (wire(command=["make"]), "'build.command'"),
        (wire(outputs="dist/"), "'build.outputs'"),
        (wire(outputs=[1]), "'build.outputs'"),
        (wire(outputs=["a"] * 2000), "'build.outputs'"),
        (wire(files=True), "'build.files'"),
        (wire(files=-1), "'build.files'"),
        (wire(files=1.5), "'build.files'"),
        (wire(size="4096"), "'build.size'"),
        (wire(started=float("nan")), "'build.started'"),
        (wire(started=1e300), "'build.started'"),
        (wire(finished=1.0), "'build.finished' (1.0) is before"),
        (wire(builder_version="1.0; rm -rf /"), "'build.builder_version'"),
        (wire(source="abc"), "'build.source' must be a JSON object"),
        (wire(**{"source.commit": "HEAD"}), "'build.source.commit'"),
        (wire(**{"source.dirty": "no"}), "'build.source.dirty'"),
        (wire(**{"source.branch": "b" * 2000}), "'build.source.branch'"),
        (wire(**{"source.signed": True}), "'build.source' has fields"),
        (wire(**{"workspace.mode": "magic"}), "'build.workspace.mode' must be one of"),
        (wire(**{"workspace.files": None}), "'build.workspace.files'"),
        (wire(**{"workspace.inputs": "src/**"}), "'build.workspace.inputs'"),
        (wire(pipeline=[1]), "'build.pipeline'"),
        (wire(pipeline={"run": "x" * 70_000}), "'build.pipeline'"),
        (
            wire(pipeline={"run": {"a": {"b": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}}}),
            "'build.pipeline'",
        ),
    ],
)
def test_from_json_refuses_what_no_client_sends(data: object, field: str) -> None:
    with pytest.raises(UsageError) as caught:
        BuildFacts.from_json(data)
    assert field in caught.value.message
    assert caught.value.hint is not None and "to_json()" in caught.value.hint
    assert len(caught.value.message) < 400, "an absurd value is described, not echoed"


@pytest.mark.parametrize(
    "digest", ["sha512:" + "ab" * 64, "sha256:" + "AB" * 32, "sha256:abc", "ab" * 32, 7, None]
)
def test_from_json_refuses_anything_but_a_sha256_digest(digest: object) -> None:
    with pytest.raises(Refused) as caught:
        BuildFacts.from_json(wire(digest=digest))
    assert "'build.digest' must be a sha256 digest" in caught.value.message
    assert caught.value.hint is not None
