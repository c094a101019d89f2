"""Immutable, session-free views of registry rows, with JSON-ready ``to_dict``.

The Registry returns these instead of ORM objects, so callers never hit lazy loads on a
closed session and never mutate the database by accident. Tasks and versions are read
with column-level selects (``query``/``of``): building ORM entities for 10,000 tasks
costs seconds, rows cost milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import Label, Row, Select, select
from sqlalchemy.orm import aliased

from registry.liveness import reported_state
from registry.models import Blob, Job, ModelVersion, Similarity, Task


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


#: Resolves a blob key against the registry's store (``BlobStore.uri_of``).
Locate = Callable[[str], str]


@dataclass(frozen=True)
class BlobRow:
    """Where a blob is and what it hashes to (its layout meta is loaded only when needed).

    ``key`` is what the row records (relative to the store); ``uri`` is that key resolved
    against the store the registry was opened with.
    """

    id: int
    kind: str
    sha256: str
    key: str
    size_bytes: int
    numel: int | None
    uri: str

    @classmethod
    def of(cls, values: Sequence[Any], locate: Locate) -> BlobRow:
        """From the columns of ``_blob_columns``, in order."""
        blob_id, kind, sha256, key, size_bytes, numel = values
        return cls(blob_id, kind, sha256, key, size_bytes, numel, uri=locate(key))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "uri": self.uri,
            "numel": self.numel,
            "bytes": self.size_bytes,
        }


# BlobRow fields read from the table, and the column each one comes from.
_BLOB_COLUMNS = {
    "id": "id",
    "kind": "kind",
    "sha256": "sha256",
    "key": "uri",
    "size_bytes": "size_bytes",
    "numel": "numel",
}
_BLOB_WIDTH = len(_BLOB_COLUMNS)


def _blob_columns(blob: Any, prefix: str) -> list[Label[Any]]:
    """A blob's BlobRow columns, in field order (rows are unpacked positionally)."""
    return [
        getattr(blob, column).label(f"{prefix}_{name}") for name, column in _BLOB_COLUMNS.items()
    ]


@dataclass(frozen=True)
class VersionRow:
    id: int
    parent_id: int | None
    is_head: bool
    created_at: datetime
    weights: BlobRow

    @staticmethod
    def query() -> Select[Any]:
        return select(
            ModelVersion.id,
            ModelVersion.parent_id,
            ModelVersion.is_head,
            ModelVersion.created_at,
            *_blob_columns(Blob, "weights"),
        ).join(Blob, Blob.id == ModelVersion.weights_blob_id)

    @classmethod
    def of(cls, row: Row[Any], locate: Locate) -> VersionRow:
        return cls(*row[:4], weights=BlobRow.of(row[4:], locate))


@dataclass(frozen=True)
class TaskRow:
    name: str
    seq: int
    status: str
    data_spec: str
    num_classes: int
    reference_task: str | None
    reference_jsd: float | None
    rate: float
    val_accuracy: float
    kept: str
    backbone: dict[str, Any]
    extra: dict[str, Any] | None
    class_names: list[str] | None
    model_version_id: int
    created_at: datetime
    mask: BlobRow
    private: BlobRow

    @staticmethod
    @cache
    def query() -> Select[Any]:
        """Column-level select (no ORM entities): listing 10,000 tasks must stay fast.

        Built once: selects are immutable (``.where`` returns a new one), and building the
        blob aliases anew cost a task lookup more than the database round trip.
        """
        mask, private = aliased(Blob, name="mask_blob"), aliased(Blob, name="private_blob")
        return (
            select(
                *(getattr(Task, name) for name in _TASK_FIELDS),
                *_blob_columns(mask, "mask"),
                *_blob_columns(private, "private"),
            )
            .join(mask, mask.id == Task.mask_blob_id)
            .join(private, private.id == Task.private_blob_id)
        )

    @classmethod
    def of(cls, row: Row[Any], locate: Locate) -> TaskRow:
        n, b = len(_TASK_FIELDS), _BLOB_WIDTH
        return cls(
            *row[:n],
            mask=BlobRow.of(row[n : n + b], locate),
            private=BlobRow.of(row[n + b :], locate),
        )

    def names(self) -> list[str]:
        """What each output of the task's head means: the stored class names, else (tasks
        committed before revision 0004) the label numbers."""
        stored = self.class_names or (self.extra or {}).get("class_names")
        return (
            [str(name) for name in stored] if stored else [str(k) for k in range(self.num_classes)]
        )

    @property
    def measured_accuracy(self) -> float | None:
        """The validation accuracy, or None for a network imported without data (its
        NOT NULL column holds 0 there: nothing was measured)."""
        return self.val_accuracy if self.data_spec else None

    def to_dict(self) -> dict[str, Any]:
        """The keys of ``strata tasks --json`` (and the task part of ``strata show``)."""
        return {
            "name": self.name,
            "seq": self.seq,
            "status": self.status,
            "rate": self.rate,
            "val_accuracy": self.measured_accuracy,
            "reference_task": self.reference_task,
            "reference_jsd": self.reference_jsd,
            "kept": self.kept,
            "data_spec": self.data_spec,
            "num_classes": self.num_classes,
            "backbone": self.backbone,
            "extra": self.extra,
            "class_names": self.class_names,
            "model_version_id": self.model_version_id,
            "created_at": _iso(self.created_at),
            "mask": self.mask.to_dict(),
            "private": self.private.to_dict(),
        }


_TASK_FIELDS = [f.name for f in fields(TaskRow) if f.name not in ("mask", "private")]


@dataclass(frozen=True)
class SimilarityRow:
    task: str
    jsd: float
    method: str

    @classmethod
    def of(cls, similarity: Similarity) -> SimilarityRow:
        return cls(task=similarity.candidate_task, jsd=similarity.jsd, method=similarity.method)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "jsd": self.jsd, "method": self.method}


@dataclass(frozen=True)
class JobRow:
    id: str
    kind: str
    task_name: str
    state: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    progress: dict[str, Any] | None
    error: str | None
    ray_job_id: str | None
    args: dict[str, Any]

    @classmethod
    def of(cls, job: Job, state: str | None = None) -> JobRow:
        """The row of ``job``; ``state`` overrides the stored one (``lost`` is derived)."""
        return cls(
            id=job.id,
            kind=job.kind,
            task_name=job.task_name,
            state=state or job.state,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            progress=job.progress,
            error=job.error,
            ray_job_id=job.ray_job_id,
            args=job.args,
        )

    @classmethod
    def reported(cls, job: Job, now: datetime, lost_after: timedelta) -> JobRow:
        """The row of ``job`` as reported: ``lost`` if it is queued or running but silent
        longer than ``lost_after`` (``registry.liveness``), worked out at read time."""
        last_sign = max(t for t in (job.created_at, job.started_at, job.heartbeat_at) if t)
        return cls.of(job, reported_state(job.state, last_sign, now, lost_after))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "task_name": self.task_name,
            "state": self.state,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "heartbeat_at": _iso(self.heartbeat_at),
            "progress": self.progress,
            "error": self.error,
            "ray_job_id": self.ray_job_id,
            "args": self.args,
        }
