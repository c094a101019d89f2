"""Bad databases, URLs and stored bytes end in one clear RegistryError, never a traceback,
never a file created, never a password shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from registry_fakes import make_commit, snapshot
from sqlalchemy import text, update

from registry import db
from registry.blobstore import BlobStore, sha256_hex
from registry.codecs import encode_arrays
from registry.errors import BlobCorrupted, RegistryUnavailable, SchemaOutOfDate
from registry.models import Summary
from registry.store import Registry

SUMMARY_ARRAYS = {"hist": 2, "count": 1}


@pytest.fixture
def one_task(registry: Registry) -> Registry:
    registry.commit_task(make_commit(registry, "t1"))
    return registry


def _store_summary(registry: Registry, data: bytes) -> None:
    with registry.engine.begin() as conn:
        conn.execute(update(Summary).values(data=data))


def test_stored_summary_that_does_not_decode(one_task: Registry) -> None:
    assert set(one_task.load_summary("t1", required=SUMMARY_ARRAYS)) == {"hist", "count"}
    _store_summary(one_task, b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    for load in (
        lambda: one_task.load_summary("t1"),
        lambda: one_task.load_summaries(["t1"], required=SUMMARY_ARRAYS),
    ):
        with pytest.raises(BlobCorrupted, match="stored summary of task 't1' is corrupted"):
            load()
    assert any("not a valid safetensors payload" in p for p in one_task.verify())


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"count": np.array([3])}, "array 'hist' is missing"),
        ({"hist": np.zeros(4), "count": np.array([3])}, r"array 'hist' has shape \(4,\)"),
        ({"hist": np.zeros((0, 4)), "count": np.array([3])}, "array 'hist' has shape"),
        (
            {"hist": np.full((2, 2), np.nan), "count": np.array([3])},
            "array 'hist' has 4 non-finite values",
        ),
    ],
    ids=["missing", "ndim", "empty", "nan"],
)
def test_stored_summary_with_wrong_arrays(one_task: Registry, arrays, problem: str) -> None:
    _store_summary(one_task, encode_arrays(arrays))
    with pytest.raises(BlobCorrupted, match=f"summary of task 't1' is corrupted: {problem}"):
        one_task.load_summary("t1", required=SUMMARY_ARRAYS)


def test_directory_where_a_blob_should_be(one_task: Registry, tmp_path: Path) -> None:
    mask = one_task.get_task("t1").mask
    path = Path(mask.uri.removeprefix("file://"))
    path.unlink()
    path.mkdir()
    with pytest.raises(BlobCorrupted, match=r"is not a file \(a directory is in its place\)"):
        one_task.load_mask("t1")
    assert any("t1" in p and "not a file" in p for p in one_task.verify())

    store = BlobStore(str(tmp_path / "other"))
    data = b"bytes whose key is taken by a folder"
    blocked = tmp_path / "other" / store.key(sha256_hex(data), "bin")
    blocked.mkdir(parents=True)
    with pytest.raises(BlobCorrupted, match="not a file"):
        store.put(data, "bin")
    assert blocked.is_dir()


def test_open_never_creates_a_sqlite_file(tmp_path: Path) -> None:
    home = tmp_path / "never-initialised" / ".strata"
    url = f"sqlite:///{home / 'registry.db'}"
    with pytest.raises(SchemaOutOfDate, match="not initialised or out of date.*run strata init"):
        Registry.open(url, str(home / "blobs"))
    assert not (tmp_path / "never-initialised").exists()
    db.upgrade(url)  # init does create it
    Registry.open(url, str(home / "blobs")).close()


def test_a_revision_from_a_newer_strata(db_url: str, store_uri: str) -> None:
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    before = snapshot(engine)
    with pytest.raises(SchemaOutOfDate, match="revision 0099, which this version of Strata"):
        db.upgrade(db_url)
    with pytest.raises(SchemaOutOfDate, match="revision 0099.*upgrade Strata"):
        Registry.open(db_url, store_uri)
    assert snapshot(engine) == before
    engine.dispose()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("registry.db", "not a database URL"),
        ("foo://somewhere/db", "unknown database dialect or driver 'foo'"),
        ("mysql+nodriver://root@127.0.0.1/db", "unknown database dialect or driver"),
    ],
)
def test_urls_that_are_not_databases(url: str, reason: str, tmp_path: Path) -> None:
    for call in (lambda: Registry.open(url, str(tmp_path)), lambda: db.upgrade(url)):
        with pytest.raises(RegistryUnavailable, match=f"cannot open the registry at .*{reason}"):
            call()


def test_a_text_file_is_not_a_registry(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not a database\n" * 20)
    before = notes.read_bytes()
    url = f"sqlite:///{notes}"
    for call in (lambda: Registry.open(url, str(tmp_path)), lambda: db.upgrade(url)):
        with pytest.raises(
            RegistryUnavailable, match="cannot open the registry at .*not a database"
        ):
            call()
    assert notes.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/test",
        "foo://admin:s3cret-pw@somewhere/db",
        "not a url with s3cret-pw in it",
    ],
)
def test_passwords_never_appear_in_errors(url: str, tmp_path: Path) -> None:
    for call in (lambda: Registry.open(url, str(tmp_path)), lambda: db.upgrade(url)):
        with pytest.raises(RegistryUnavailable) as caught:
            call()
        assert "s3cret-pw" not in str(caught.value)
        assert "cannot open the registry at" in str(caught.value)
