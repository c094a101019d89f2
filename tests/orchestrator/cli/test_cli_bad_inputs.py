"""A table of bad CLI input (issue #12): every case ends in one ``error:`` line on stderr and a
non-zero exit, never a traceback, and leaves the registry exactly as it was: its rows,
``verify``, its blob files and every task's logits, bit for bit.

The cases run in this process through ``orchestrator.cli.main`` (the console script's entry
point), so the table of 70-odd cases costs seconds, not an interpreter and a torch import per
case; ``test_cli_errors.py`` runs the real console script for a handful of them.
"""

from __future__ import annotations

import io
import shlex
import sys
import traceback
import zipfile
from collections.abc import Iterator
from contextlib import chdir, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import text

from orchestrator.cli import main
from registry import db
from registry.store import Registry
from tests.orchestrator.cli.conftest import Result
from tests.orchestrator.ray_head import free_port
from tests.registries import build_registry
from tests.synthetic import TINY_BACKBONE, synthetic_task
from workers.inference import Predictor

SECRET = "s3cr3t-pw"
EMPTY = "--db {empty_db} --store {empty_store}"  # the initialised registry with no task


@dataclass(frozen=True)
class Case:
    """``args`` after the registry options (``{name}`` fields name the world's files);
    ``says`` must appear in the error line."""

    id: str
    args: str
    says: str = ""
    tail: tuple[str, ...] = ()  # arguments shlex cannot spell (a newline)


CASES = [
    # -- where the registry lives
    Case("db-not-a-url", "--db notaurl tasks", "not a database URL"),
    Case("db-unknown-dialect", "--db foo://x/y tasks", "unknown database"),
    Case(
        "db-driver-missing", "--db mysql://nowhere/x tasks", "its database driver is not installed"
    ),
    Case("db-not-a-database", "--db sqlite:///{text_file} tasks", "registry"),
    Case("db-unreachable", "--db postgresql+psycopg://postgres@127.0.0.1:1/test tasks"),
    Case(
        "db-password-masked",
        f"--db postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/test init",
    ),
    Case("db-uninitialised", "--db sqlite:///{home}/fresh/never.db tasks", "strata init"),
    Case("db-newer-revision", "--db {future_db} init", "upgrade Strata"),
    Case("db-newer-revision-read", "--db {future_db} tasks"),
    Case("store-unknown-scheme", "--store foo://x tasks", "foo"),
    Case("store-memory", "--store memory://blobs tasks", "memory"),
    Case("store-is-a-file", "--store {text_file} add-task t9 --data builtin:digits", "store"),
    Case("store-under-a-file", "--store {text_file}/sub add-task t9 --data builtin:digits"),
    # -- usage
    Case("unknown-command", "frobnicate", "No such command"),
    Case("unknown-option", "tasks --bogus", "--bogus"),
    Case("missing-argument", "show", "Missing argument"),
    Case("not-a-number", "add-task t9 --data builtin:digits --lr abc", "--lr"),
    Case("gc-negative-age", "gc --min-age -1", "--min-age"),
    Case("gc-nan-age", "gc --min-age nan", "--min-age"),
    # -- queries
    Case("show-unknown", "show nope", "nope"),
    Case("predict-unknown", "predict nope {good_npz}", "nope"),
    Case("predict-auto-empty", EMPTY + " predict auto {good_npz}"),
    Case("predict-not-a-zip", "predict low {not_zip}", "not_zip"),
    Case("predict-garbage-npy", "predict low {garbage_npy}", "garbage"),
    Case("predict-truncated-png", "predict low {truncated_png}", "truncated"),
    Case("predict-empty-file", "predict low {empty_png}", "empty"),
    Case("predict-missing-file", "predict low {home}/missing.png", "missing"),
    Case("predict-directory", "predict low {a_dir}", "a_dir"),
    Case("predict-npz-without-x", "predict low {no_x_npz}", "no_x"),
    Case("predict-npz-object-array", "predict low {object_npz}", "object"),
    Case("predict-npz-1d", "predict low {flat_npz}", "flat"),
    Case("predict-npz-lying-header", "predict low {lying_npz}", "lying"),
    Case("predict-nan-pixels", "predict low {nan_npz}", "nan"),
    Case("similarity-empty", EMPTY + " similarity --data builtin:digits"),
    Case("similarity-bad-candidates", "similarity --data builtin:digits --candidates x:1", "x:1"),
    Case("similarity-missing-data", "similarity --data npz:{home}/missing.npz", "missing"),
    Case("similarity-zero-limit", "similarity --data builtin:digits --limit 0", "--limit"),
    # -- task names
    Case("name-auto", "add-task auto --data builtin:digits", "auto"),
    Case("name-slash", "add-task a/b --data builtin:digits", "a/b"),
    Case("name-empty", "add-task '' --data builtin:digits", "task name"),
    Case("name-blank", "add-task '   ' --data builtin:digits", "task name"),
    Case("name-multiline", "add-task --data builtin:digits", "task name", tail=("a\nb",)),
    Case("name-too-long", f"add-task {'n' * 200} --data builtin:digits", "task name"),
    Case("name-leading-dot", "add-task .hidden --data builtin:digits", "task name"),
    Case("name-exists", "add-task low --data builtin:digits", "already exists"),
    # -- data
    Case("data-missing-npz", "add-task t9 --data npz:{home}/missing.npz", "missing"),
    Case("data-unknown-format", "add-task t9 --data ftp:x", "ftp"),
    Case("data-empty", "add-task t9 --data ''", "--data"),
    Case("data-unknown-builtin", "add-task t9 --data builtin:nope", "nope"),
    Case("data-one-class", "add-task t9 --data npz:{one_class_npz}", "class"),
    Case("data-huge-label", "add-task t9 --data npz:{huge_label_npz}", "class"),
    Case("data-negative-label", "add-task t9 --data npz:{negative_label_npz}", "label"),
    Case("data-lying-header", "add-task t9 --data npz:{lying_npz}", "lying"),
    Case("data-one-class-folder", "add-task t9 --data imagefolder:{one_class_folder}", "class"),
    Case("data-folder-not-an-image", "add-task t9 --data imagefolder:{corrupt_folder}", "odd.png"),
    Case("data-folder-augment", "add-task t9 --data 'imagefolder:{corrupt_folder}?augment=2'"),
    Case("data-folder-option", "add-task t9 --data 'imagefolder:{corrupt_folder}?crop=1'", "crop"),
    Case("data-single-builtin-class", "add-task t9 --data 'builtin:mnist?classes=3'", "class"),
    # -- policies
    Case("policy-unknown", "add-task t9 --data builtin:digits --policy no-such", "no-such"),
    Case("policy-bad-toml", "add-task t9 --data builtin:digits --policy {bad_toml}", "bad"),
    Case("candidates-unknown", "add-task t9 --data builtin:digits --candidates nearest:3"),
    Case("candidates-zero", "add-task t9 --data builtin:digits --candidates recent:0"),
    Case("granularity", "add-task t9 --data builtin:digits --granularity channel", "granularity"),
    # -- numbers
    *(
        Case(f"option{flag}={value}", f"add-task t9 --data builtin:digits {flag} {value}", flag)
        for flag, value in [
            ("--lr", "inf"),
            ("--lr", "nan"),
            ("--lr", "-1"),
            ("--lr", "0"),
            ("--lr", "1e9"),
            ("--seed", "-1"),
            ("--seed", "99999999999"),
            ("--epochs", "0"),
            ("--epochs", "100000"),
            ("--finetune-epochs", "-1"),
            ("--batch-size", "0"),
            ("--loader-workers", "-1"),
            ("--limit", "0"),
        ]
    ),
    # -- first-task options: out of range, or not what the registry's network has
    Case("width-zero", "add-task t9 --data builtin:digits --width 0", "--width"),
    Case("width-two", "add-task t9 --data builtin:digits --width 2", "--width"),
    Case("width-nan", "add-task t9 --data builtin:digits --width nan", "--width"),
    Case("input-size-huge", "add-task t9 --data builtin:digits --input-size 100000", "size"),
    Case("input-size-tiny", "add-task t9 --data builtin:digits --input-size 8", "size"),
    Case("width-on-later-task", "add-task t9 --data builtin:digits --width 0.25", "--width"),
    Case("backbone-on-later-task", "add-task t9 --data builtin:digits --backbone resnet999"),
    Case(
        "backbone-unknown",
        EMPTY + " add-task t9 --data builtin:digits --backbone resnet999",
        "resnet999",
    ),
    Case(
        "width-without-multiplier",
        EMPTY + " add-task t9 --data builtin:digits --backbone resnet18 --width 0.5",
        "no width multiplier",
    ),
    # -- pretrained weights
    Case(
        "weights-missing", "add-task t9 --data builtin:digits --weights {home}/x.pth", "--weights"
    ),
    Case(
        "weights-on-later-task",
        "add-task t9 --data builtin:digits --weights {bad_toml}",
        "first task only",
    ),
    Case(
        "import-base-on-later-task",
        "import-base t9 --data builtin:digits --weights {bad_toml}",
        "already has tasks",
    ),
    Case(
        "weights-not-a-state-dict",
        EMPTY + " add-task t9 --data builtin:digits --backbone resnet18 --weights {bad_toml}",
        "cannot read weights file",
    ),
    # -- Ray addresses
    Case("jobs-url-to-add-task", "--address http://127.0.0.1:9 add-task t9 --data builtin:digits"),
    Case("jobs-url-to-similarity", "--address http://127.0.0.1:9 similarity --data builtin:digits"),
    Case("jobs-url-to-serve", "--address http://127.0.0.1:9 serve", "jobs API"),
    Case("submit-without-address", "submit add-task t9 --data builtin:digits", "--address"),
    Case("submit-to-gcs-address", "--address 127.0.0.1:6379 submit add-task t9 --data x", "http"),
    Case("submit-nothing-listens", "--address http://127.0.0.1:{free_port} submit add-task t9"),
    # -- serving
    Case("serve-empty", EMPTY + " serve", "no task"),
    Case("serve-port-zero", "serve --port 0", "--port"),
    Case("serve-port-huge", "serve --port 70000", "--port"),
    Case("serve-port-in-use", "serve --port {busy_port}", "in use"),
    Case("serve-replicas", "serve --min-replicas 3 --max-replicas 1", "replicas"),
    Case("serve-nan-delay", "serve --upscale-delay nan", "delay"),
    Case("serve-batch-wait", "serve --batch-wait-ms -1", "--batch-wait-ms"),
    Case("demo-zero-epochs", "demo --epochs 0", "--epochs"),
]


def run_cli(args: list[str], cwd: Path) -> Result:
    """``strata ARGS`` through the console script's ``main``, in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["strata", *args]
    code: int | str
    try:
        with chdir(cwd), redirect_stdout(stdout), redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what a user would see as a traceback
        code = "raised"
        stderr.write(traceback.format_exc())
    finally:
        sys.argv = argv
    return Result(code, stdout.getvalue(), stderr.getvalue())


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _lying_npz(path: Path) -> Path:
    """An npz whose ``x`` header claims 10**12 float32 values and holds 16 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 1, 1000, 1000)}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(16))
        archive.writestr("y.npy", _npy_bytes(np.zeros(10**6, np.int64)[:4]))
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _png(path: Path, size: int = 32) -> Path:
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)
    return path


def _files(home: Path) -> dict[str, Path]:
    """Every bad (and the one good) input file the cases name."""
    pixels = np.random.default_rng(0).integers(0, 255, (20, 1, 32, 32), dtype=np.uint8)
    labels = np.arange(20) % 4
    truncated = home / "truncated.png"
    truncated.write_bytes(_png(home / "whole.png").read_bytes()[:60])
    folder = home / "one_class_folder" / "cats"
    folder.mkdir(parents=True)
    for index in range(3):
        _png(folder / f"{index}.png")
    for name in ("cats", "dogs"):
        (home / "corrupt_folder" / name).mkdir(parents=True)
        _png(home / "corrupt_folder" / name / "1.png")
    (home / "corrupt_folder" / "dogs" / "odd.png").write_text("not an image")
    (home / "a_dir").mkdir()
    (home / "fresh").mkdir()
    files = {
        "text_file": home / "notes.txt",
        "not_zip": home / "not_zip.npz",
        "garbage_npy": home / "garbage.npy",
        "empty_png": home / "empty.png",
        "bad_toml": home / "bad.toml",
        "truncated_png": truncated,
        "one_class_folder": folder.parent,
        "corrupt_folder": home / "corrupt_folder",
        "a_dir": home / "a_dir",
        "good_npz": _npz(home / "good.npz", x=pixels[:4]),
        "no_x_npz": _npz(home / "no_x.npz", images=pixels),
        "object_npz": _npz(home / "object.npz", x=np.array([{"a": 1}, None], dtype=object)),
        "flat_npz": _npz(home / "flat.npz", x=np.zeros(7, np.float32)),
        "nan_npz": _npz(home / "nan.npz", x=np.full((2, 1, 32, 32), np.nan, np.float32)),
        "one_class_npz": _npz(home / "one_class.npz", x=pixels, y=np.zeros(20, np.int64)),
        "huge_label_npz": _npz(home / "huge.npz", x=pixels, y=np.where(labels, labels, 2**40)),
        "negative_label_npz": _npz(home / "negative.npz", x=pixels, y=labels - 1),
        "lying_npz": _lying_npz(home / "lying.npz"),
    }
    files["text_file"].write_text("not a database\n")
    files["not_zip"].write_bytes(b"not a zip file at all")
    files["garbage_npy"].write_bytes(b"\x93NUMPY garbage")
    files["empty_png"].write_bytes(b"")
    files["bad_toml"].write_text("[[[ not toml")
    return files


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A registry with two tiny tasks, an initialised empty one, the bad files, a busy port."""
    import socket

    home = tmp_path_factory.mktemp("bad-inputs")
    db_url, store = f"sqlite:///{home / 'registry.db'}", str(home / "blobs")
    build_registry(
        db_url,
        store,
        [("low", synthetic_task(0)), ("high", synthetic_task(1))],
        TINY_BACKBONE,
    )
    empty_db = home / "empty.db"
    db.upgrade(f"sqlite:///{empty_db}")
    future_db = f"sqlite:///{home / 'future.db'}"  # written by a newer Strata
    db.upgrade(future_db)
    with db.make_engine(future_db).begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield SimpleNamespace(
            home=home,
            db=db_url,
            store=store,
            fields={
                "home": home,
                "empty_db": f"sqlite:///{empty_db}",
                "future_db": future_db,
                "empty_store": home / "empty-blobs",
                "free_port": free_port(),
                "busy_port": busy.getsockname()[1],
                **_files(home),
            },
        )


def _state(world: SimpleNamespace) -> dict:
    """Everything a bad input must not change."""
    probe = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    with Registry.open(world.db, world.store) as registry:
        predictor = Predictor(registry)
        return {
            "tasks": [task.to_dict() for task in registry.list_tasks()],
            "jobs": [job.to_dict() for job in registry.list_jobs()],
            "capacity": registry.capacity(),
            "verify": registry.verify(),
            "logits": {
                task.name: predictor.view(task.name).logits(probe).numpy().tobytes()
                for task in registry.list_tasks()
            },
            "files": sorted(
                (str(path.relative_to(world.home)), path.stat().st_size)
                for path in Path(world.store).rglob("*")
            ),
        }


def test_bad_cli_inputs_end_in_one_error_line_and_change_nothing(world):
    before = _state(world)
    assert before["verify"] == [] and len(before["tasks"]) == 2
    failures = []
    for case in CASES:
        given = shlex.split(case.args.format(**world.fields))
        args = ["--db", world.db, "--store", world.store, *given, *case.tail]
        result = run_cli(args, world.home)
        lines = result.stderr.strip().splitlines()
        problems = [
            f"exit {result.code}" if result.code in (0, "raised") else None,
            "traceback" if "Traceback" in result.stderr else None,
            f"{len(lines)} stderr lines" if len(lines) != 1 else None,
            "no `error:` line" if not lines or not lines[-1].startswith("error: ") else None,
            f"missing {case.says!r}" if lines and case.says not in lines[-1] else None,
            "password shown" if SECRET in result.stderr + result.stdout else None,
        ]
        problems = [problem for problem in problems if problem]
        if problems:
            failures.append(f"{case.id}: {', '.join(problems)}: {result.stderr.strip()[-600:]}")
    assert not failures, f"{len(failures)} of {len(CASES)} cases failed:\n" + "\n".join(failures)
    assert _state(world) == before
    assert not (world.home / "fresh" / "never.db").exists()


def test_the_table_is_big_enough():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_mask_blob_is_one_error_line_for_predict(world, tmp_path, damage):
    """Views are built from the stored masks: ``predict`` (a task or ``auto``) refuses a
    damaged one with one line naming the task, never logits or a traceback."""
    import shutil

    shutil.copy(world.home / "registry.db", tmp_path / "registry.db")
    shutil.copytree(world.store, tmp_path / "blobs")
    db_url, store = f"sqlite:///{tmp_path / 'registry.db'}", str(tmp_path / "blobs")
    with Registry.open(db_url, store) as registry:
        mask = registry.get_task("high").mask
    mask_file = tmp_path / "blobs" / mask.key
    if damage == "missing":
        mask_file.unlink()
    else:
        mask_file.write_bytes(b"\xff" + mask_file.read_bytes()[1:])
    for task in ("low", "auto"):
        args = ["--db", db_url, "--store", store, "predict", task, str(world.fields["good_npz"])]
        result = run_cli(args, world.home)
        lines = result.stderr.strip().splitlines()
        assert result.code not in (0, "raised") and len(lines) == 1, result.stderr
        assert "stored delta of task 'high' (seq 2) is unusable" in lines[0], lines[0]
