"""The content-addressed store: never overwrite, detect tampering, unpack once and safely."""

from __future__ import annotations

import io
import tarfile
import threading
from pathlib import Path

import pytest

from conveyor.artifacts import ArtifactStore, ArtifactStoreProtocol
from conveyor.artifacts.archive import create_archive, file_digest
from conveyor.errors import NotFound, Refused


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "project")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "main.py").write_text("print('hello')\n")
    (src / "app" / "run.sh").write_text("#!/bin/sh\n")
    (src / "app" / "run.sh").chmod(0o755)
    return create_archive(src, ["app"], tmp_path / "build.tar.gz").path


def evil_archive(path: Path, name: str, *, link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        if link is None:
            data = b"owned\n"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
    return path


def test_it_satisfies_the_protocol(store: ArtifactStore) -> None:
    seam: ArtifactStoreProtocol = store
    assert seam is store


def test_put_stores_by_digest_read_only(store: ArtifactStore, archive: Path) -> None:
    digest = store.put(archive)
    assert digest == file_digest(archive)
    path = store.path(digest)
    assert (
        path == (store.objects / f"{digest.removeprefix('sha256:')}.tar.gz")
        and path.parent.name == "sha256"
    )
    assert path.read_bytes() == archive.read_bytes()
    assert path.stat().st_mode & 0o222 == 0
    assert store.exists(digest)
    assert [p.name for p in store.objects.iterdir()] == [path.name], "no temp files left"


def test_put_never_overwrites_an_existing_digest(store: ArtifactStore, archive: Path) -> None:
    digest = store.put(archive)
    path = store.path(digest)
    before = path.stat()
    assert store.put(archive) == digest
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Even a damaged stored copy is left for verify() to report, not silently replaced.
    path.chmod(0o644)
    path.write_bytes(b"damaged")
    assert store.put(archive) == digest
    assert path.read_bytes() == b"damaged"


def test_verify_passes_on_intact_bytes(store: ArtifactStore, archive: Path) -> None:
    store.verify(store.put(archive))


def test_flipping_one_byte_is_refused(store: ArtifactStore, archive: Path) -> None:
    digest = store.put(archive)
    path = store.path(digest)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(Refused) as info:
        store.verify(digest)
    assert info.value.message.startswith(f"artifact {digest} is corrupt: stored bytes hash to ")
    assert file_digest(path) in info.value.message
    assert info.value.hint and "rebuild" in info.value.hint
    with pytest.raises(Refused):
        store.unpack(digest)


def test_missing_and_malformed_digests_are_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFound) as info:
        store.verify("sha256:" + "0" * 64)
    assert info.value.hint
    assert not store.exists("sha256:" + "0" * 64)
    with pytest.raises(NotFound):
        store.path("md5:1234")


def test_unpack_extracts_once(store: ArtifactStore, archive: Path) -> None:
    digest = store.put(archive)
    first = store.unpack(digest)
    assert first == store.unpacked / digest.removeprefix("sha256:")
    assert (first / "app" / "main.py").read_text() == "print('hello')\n"
    assert (first / "app" / "run.sh").stat().st_mode & 0o111
    inode = (first / "app" / "main.py").stat().st_ino
    assert store.unpack(digest) == first
    assert (first / "app" / "main.py").stat().st_ino == inode, "an intact tree is reused"
    trees = [p.name for p in store.unpacked.iterdir() if p.is_dir()]
    assert trees == [first.name]


def test_concurrent_unpacks_agree(store: ArtifactStore, archive: Path) -> None:
    digest = store.put(archive)
    results: list[Path] = []
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            results.append(store.unpack(digest))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=unpack) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(set(results)) == 1
    assert [p.name for p in store.unpacked.iterdir() if p.is_dir()] == [results[0].name]


@pytest.mark.parametrize(
    ("name", "link"),
    [("../escaped.txt", None), ("a/../../escaped.txt", None), ("ln", "/etc/passwd")],
)
def test_unpack_refuses_paths_leaving_the_artifact(
    store: ArtifactStore, tmp_path: Path, name: str, link: str | None
) -> None:
    digest = store.put(evil_archive(tmp_path / "evil.tar.gz", name, link=link))
    with pytest.raises(Refused) as info:
        store.unpack(digest)
    assert "cannot be unpacked safely" in info.value.message
    assert info.value.hint
    assert not (store.unpacked / digest.removeprefix("sha256:")).exists()
    assert not (store.unpacked / "escaped.txt").exists()
    leftovers = [p for p in store.unpacked.iterdir() if p.suffix != ".lock"]
    assert leftovers == [], "no half-extracted leftovers"


def test_absolute_member_names_land_inside_the_artifact(
    store: ArtifactStore, tmp_path: Path
) -> None:
    target = tmp_path / "absolute-escape.txt"
    digest = store.put(evil_archive(tmp_path / "evil.tar.gz", str(target)))
    unpacked = store.unpack(digest)
    assert not target.exists()
    assert (unpacked / str(target).lstrip("/")).read_text() == "owned\n"


@pytest.mark.parametrize("change", ["edit", "add", "remove", "chmod"])
def test_a_changed_unpacked_tree_is_never_served(
    store: ArtifactStore, archive: Path, change: str
) -> None:
    digest = store.put(archive)
    tree = store.unpack(digest)
    fingerprint = store.unpacked / f"{digest.removeprefix('sha256:')}.tree"
    assert fingerprint.stat().st_mode & 0o777 == 0o600
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    original = {p: p.read_bytes() for p in files}
    victim = files[0]
    victim.parent.chmod(0o755)
    if change == "edit":
        victim.chmod(0o644)
        victim.write_bytes(b"served under someone else's digest")
    elif change == "add":
        (victim.parent / "extra.py").write_text("import os\n")
    elif change == "remove":
        victim.unlink()
    else:
        victim.chmod(0o777)
    again = store.unpack(digest)
    assert again == tree
    assert {p: p.read_bytes() for p in files} == original
    assert not (victim.parent / "extra.py").exists()
    assert victim.stat().st_mode & 0o222 == 0  # read-only again
