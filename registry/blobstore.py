"""Content-addressed blob store on any fsspec filesystem (local folder by default, or S3).

Layout: ``<root>/<key>``, key ``<sha[:2]>/<sha>.<suffix>``. The registry records keys, not
URIs, and a key is always resolved against the store it is given, never another root: a
copied, moved or restored registry reads (and garbage-collects) its own folder.

Writes are idempotent and atomic: a local blob is written to a temp file beside its key,
fsynced and renamed into place; on object stores a key is written once with a single PUT,
which is atomic there. Every read re-hashes.

Store URIs:
- a path or ``file:///abs/path`` (default ``./.strata/blobs``, made absolute);
- any fsspec URL, e.g. ``s3://bucket/prefix``. Filesystem options may be appended as a
  query string (``s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000``); for ``s3://``
  the endpoint also defaults to ``$STRATA_S3_ENDPOINT``. Credentials come from the usual
  AWS environment/config chain, never from the URI. Options are not part of blob URIs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

from registry.errors import BlobCorrupted, BlobMissing, StoreUnwritable

DEFAULT_STORE_URI = "./.strata/blobs"
S3_ENDPOINT_ENV = "STRATA_S3_ENDPOINT"
_BOOLEANS = {"true": True, "false": False}
# What the store itself writes under its root: blob keys, and the temp files of local writes
# (``_atomic_write``). Anything else there belongs to someone else.
_BLOB_KEY = r"[0-9a-f]{2}/[0-9a-f]{64}\.\w+"
_OWN_KEY = re.compile(rf"{_BLOB_KEY}|[0-9a-f]{{2}}/\.[0-9a-f]{{64}}\.\w+\.[^/]+\.tmp")
# The key at the end of a blob reference: a key, or a URI from before keys (migration 0002).
_KEY_AT_END = re.compile(rf"(?:^|/)({_BLOB_KEY})$")


@dataclass(frozen=True)
class BlobRef:
    """Where a blob was stored (``key`` under the store, ``uri`` for people) and its hash."""

    sha256: str
    key: str
    uri: str
    size: int


@dataclass(frozen=True)
class StoredObject:
    """One object under the store's root: a blob, or the temp file of an interrupted write."""

    key: str
    uri: str
    size: int
    modified: datetime


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of(reference: str) -> str | None:
    """The blob key a registry reference names (a key, or an old absolute URI's tail)."""
    match = _KEY_AT_END.search(reference)
    return match.group(1) if match else None


def _split_options(uri: str) -> tuple[str, dict[str, Any]]:
    """``scheme://bucket/prefix?k=v`` → (``scheme://bucket/prefix``, {k: v})."""
    if "://" not in uri or "?" not in uri or uri.startswith("file://"):
        return uri, {}
    base, query = uri.split("?", 1)
    options = {k: _BOOLEANS.get(v.lower(), v) for k, v in parse_qsl(query, strict_parsing=True)}
    return base, options


def _default_options(protocol: str) -> dict[str, Any]:
    endpoint = os.environ.get(S3_ENDPOINT_ENV)
    if protocol in ("s3", "s3a") and endpoint:
        return {"endpoint_url": endpoint}
    return {}


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` so that ``path`` either does not exist or holds all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _not_a_file(uri: str) -> BlobCorrupted:
    return BlobCorrupted(f"blob {uri} is not a file (a directory is in its place): remove it")


def _modified(fs: fsspec.AbstractFileSystem, path: str, info: Mapping[str, Any]) -> datetime:
    """When an object was last written, from the field its filesystem reports."""
    if "mtime" in info:  # local
        return datetime.fromtimestamp(info["mtime"], tz=UTC)
    modified = info.get("LastModified") or fs.modified(path)  # s3fs; other filesystems
    return modified if modified.tzinfo else modified.replace(tzinfo=UTC)


class BlobStore:
    """Put/get immutable byte strings by sha256."""

    def __init__(self, uri: str | None = None, storage_options: Mapping[str, Any] | None = None):
        base, query_options = _split_options(uri or DEFAULT_STORE_URI)
        protocol = urlsplit(base).scheme if "://" in base else "file"
        self._options = {
            **_default_options(protocol),
            **query_options,
            **(storage_options or {}),
        }
        self.fs, root = fsspec.core.url_to_fs(base, **self._options)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            root = os.path.abspath(root)
        self._root = root.rstrip("/")
        #: The store's canonical URI (no options); every blob URI starts with it.
        self.uri = (
            Path(self._root).as_uri() if self.is_local else self.fs.unstrip_protocol(self._root)
        )

    def __repr__(self) -> str:
        return f"BlobStore({self.uri!r})"

    @staticmethod
    def key(sha256: str, suffix: str) -> str:
        return f"{sha256[:2]}/{sha256}.{suffix.lstrip('.')}"

    def uri_of(self, key: str) -> str:
        """The full URI of ``key`` in this store (for messages and listings)."""
        return f"{self.uri}/{key}"

    def _path(self, reference: str) -> str:
        """The path of a key (or of a URI inside this store); never another store's object."""
        key = reference.removeprefix(self.uri + "/")
        if not _OWN_KEY.fullmatch(key):
            raise BlobMissing(f"blob {reference} is not a key of the store {self.uri}")
        return f"{self._root}/{key}"

    def put(self, data: bytes, suffix: str) -> BlobRef:
        """Store ``data`` under its hash; a no-op if an intact copy is already there."""
        sha = sha256_hex(data)
        key = self.key(sha, suffix)
        ref = BlobRef(sha256=sha, key=key, uri=self.uri_of(key), size=len(data))
        if self._intact(ref):
            return ref
        path = self._path(key)
        try:
            if self.is_local:
                _atomic_write(Path(path), data)
            else:
                self.fs.pipe_file(path, data)
        except IsADirectoryError as exc:
            raise _not_a_file(ref.uri) from exc
        return ref

    def _intact(self, ref: BlobRef) -> bool:
        try:
            if self.fs.size(self._path(ref.key)) != ref.size:  # cheap before re-hashing
                return False
            return sha256_hex(self._read(ref.key)) == ref.sha256
        except (FileNotFoundError, BlobMissing):
            return False

    def _read(self, reference: str) -> bytes:
        path = self._path(reference)
        try:
            if not self.is_local:
                return self.fs.cat_file(path)
            # Without fsspec's open, a Path or a buffer (whose set-up asks isatty): a version
            # is two reads per task delta.
            with open(path, "rb", buffering=0) as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise BlobMissing(f"blob {reference} is missing from the store {self.uri}") from exc
        except IsADirectoryError as exc:
            raise _not_a_file(reference) from exc

    def get(self, reference: str, sha256: str) -> bytes:
        """The bytes of a key (or a URI inside this store); BlobMissing if absent,
        BlobCorrupted if the hash differs or something other than a file is in its place."""
        data = self._read(reference)
        actual = sha256_hex(data)
        if actual != sha256:
            raise BlobCorrupted(
                f"blob {reference} is corrupted: sha256 {actual}, expected {sha256}"
            )
        return data

    def listing(self) -> list[StoredObject]:
        """Every object the store wrote under its root (blobs, temp files), in key order.

        Other files under the root are not the store's and are never listed.
        """
        if not self.fs.exists(self._root):
            return []
        found = self.fs.find(self._root, detail=True)
        keys = {path: path[len(self._root) + 1 :] for path in found}
        return [
            StoredObject(
                key=key,
                uri=self.uri_of(key),
                size=int(found[path]["size"]),
                modified=_modified(self.fs, path, found[path]),
            )
            for path, key in sorted(keys.items())
            if _OWN_KEY.fullmatch(key)
        ]

    def delete(self, reference: str) -> None:
        """Remove the object of a key (or of a URI inside this store)."""
        self.fs.rm_file(self._path(reference))

    def check_writable(self) -> None:
        """Write and remove a probe under the root, so that a store that cannot keep blobs
        (a file, a read-only folder, a bucket without write access) fails before training,
        not after it."""
        probe = f"{self._root}/.strata-probe-{os.getpid()}-{uuid.uuid4().hex}"
        try:
            if self.is_local:
                Path(self._root).mkdir(parents=True, exist_ok=True)
            self.fs.pipe_file(probe, b"probe")
            self.fs.rm_file(probe)
        except (OSError, PermissionError, ValueError) as exc:
            raise StoreUnwritable(
                f"the blob store {self.uri} cannot be written ({type(exc).__name__}: "
                f"{' '.join(str(exc).split()) or 'no detail'}); give a writable folder or bucket"
            ) from exc
