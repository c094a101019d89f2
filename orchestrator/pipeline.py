"""The add-task pipeline: validate → candidates → similarity fan-out → rates → train → commit.

Everything a user can get wrong (name, data, policies) is checked before a job row exists
or any training starts. The commit is the registry's single compare-and-swap transaction,
so a crash anywhere before it leaves the registry as it was (the job row says "failed").
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import ray

from base.errors import StrataError
from base.layers import IMAGENET_MEAN, IMAGENET_STD
from base.location import RegistryLocation
from orchestrator.commits import task_commit
from orchestrator.options import (
    FIRST_TASK_ONLY,
    AddTaskOptions,
    first_task_width,
    validate_options,
)
from orchestrator.rates import RatePolicy, load_policy
from orchestrator.ray_runtime import connect
from registry.commit import TaskCommit
from registry.errors import TaskExists
from registry.liveness import Heartbeat
from registry.records import JobRow, TaskRow
from registry.store import Registry
from workers.backbone import BackboneConfig
from workers.data import TaskData, load_data, peek_spec
from workers.loading import (
    backbone_of,
    load_network,
    private_from_arrays,
)
from workers.network import PrivateParams, SharedNetwork, head_classes
from workers.pretrained import imported_outcome, pretrained_network
from workers.similarity import choose_reference
from workers.similarity_ray import similarities
from workers.summary import SUMMARY_KIND
from workers.training import TrainConfig
from workers.training_ray import (
    JobHeartbeat,
    TrainedTask,
    check_placement,
    gpu_request,
    train_task,
)

NO_SUMMARY = "none"  # the summary kind of a task imported without data (no arrays)


def train_config(options: AddTaskOptions) -> TrainConfig:
    return TrainConfig(**options.training())


@dataclass
class PreparedTask:
    """A validated request: the starting network, its data and its policies."""

    options: AddTaskOptions
    network: SharedNetwork
    parent_version_id: int | None
    data: TaskData | None  # None: import-base without --data (nothing to train or summarise)
    policy: RatePolicy
    # The first task's biases and normalisation state from a ``--weights`` file (else None).
    pretrained: PrivateParams | None = None


def _check_first_task_options(
    config: BackboneConfig, options: AddTaskOptions, explicit: Collection[str]
) -> None:
    """Refuse a first-task-only option given for a later task with another value than the
    registry's network has: it cannot apply, and ignoring it silently would mislead."""
    for option, field in FIRST_TASK_ONLY.items():
        given, fixed = getattr(options, option), getattr(config, field)
        if option in explicit and given != fixed:
            flag = "--" + option.replace("_", "-")
            raise StrataError(
                f"{flag} {given} differs from the registry's network ({fixed}), which the "
                f"first task fixed; leave {flag} out for later tasks"
            )


def prepare(
    registry: Registry, options: AddTaskOptions, explicit: Collection[str] = ()
) -> PreparedTask:
    """Check everything the user controls before any job row or training exists.

    ``explicit`` names the options the user gave (not defaults), for the first-task-only check.
    """
    validate_options(options)
    if registry.task_exists(options.name):
        raise TaskExists(f"a task named {options.name!r} already exists; pick another name")
    registry.blobs.check_writable()
    head = registry.head()
    config = backbone_of(registry)
    if config is not None:
        _check_first_task_options(config, options, explicit)
        if options.import_head:
            raise StrataError("import-base registers task 1: this registry already has tasks")
        if options.weights is not None:
            raise StrataError(
                "--weights applies to the first task only: the registry's network is fixed; "
                "leave --weights out for later tasks"
            )
    pretrained = None
    if head is None or config is None:
        config = first_backbone(options, explicit)
        if options.weights is not None:
            network, pretrained = pretrained_network(
                config, options.weights, keep_head=options.import_head
            )
        else:
            network = SharedNetwork.fresh(config, seed=options.seed)
    else:
        network = load_network(registry, head.id)
    policy = load_policy(options.policy, network.layers, config.name)
    data = None
    if options.data:
        data = load_data(
            options.data,
            image_size=config.input_size,
            channels=config.in_channels,
            seed=options.seed,
            limit=options.limit,
        )
    if options.import_head and pretrained is not None:
        _check_imported_head(options, head_classes(pretrained, config), data)
    return PreparedTask(options, network, head.id if head else None, data, policy, pretrained)


def _check_imported_head(options: AddTaskOptions, outputs: int, data: TaskData | None) -> None:
    """The data's labels and the class-name file must fit the imported head's outputs."""
    if data is not None and data.num_classes > outputs:
        raise StrataError(
            f"--data has {data.num_classes} classes but the imported head has {outputs} outputs"
        )
    if options.classes is not None:
        names = read_class_names(options.classes)
        if len(names) != outputs:
            raise StrataError(
                f"--classes {options.classes} names {len(names)} classes; the head has {outputs}"
            )


def read_class_names(path: str) -> list[str]:
    """One class name per non-empty line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StrataError(f"cannot read --classes {path}: {exc}") from None
    return [line.strip() for line in lines if line.strip()]


def first_backbone(options: AddTaskOptions, explicit: Collection[str]) -> BackboneConfig:
    """The backbone a first task fixes: RGB with ImageNet normalisation from ``--weights``,
    else the data's channels and no normalisation."""
    pretrained = options.weights is not None
    return BackboneConfig(
        name=options.backbone,
        width=first_task_width(options, explicit),
        input_size=options.input_size,
        in_channels=3 if pretrained else peek_spec(options.data).shape[0],
        mean=IMAGENET_MEAN if pretrained else None,
        std=IMAGENET_STD if pretrained else None,
    )


ProgressHook = Callable[[str], None]


def add_task(
    location: RegistryLocation,
    options: AddTaskOptions,
    *,
    on_stage: ProgressHook | None = None,
    on_job: Callable[[JobRow], None] | None = None,
    ray_address: str | None = None,
    explicit: Collection[str] = (),
) -> TaskRow:
    """Run the whole add-task method for one task and commit it; returns the task row.

    Ray is joined (or started) only once the request has been validated.
    """
    stage = on_stage or (lambda _: None)
    registry = Registry.open(location.db_url, location.store_uri)
    try:
        stage("checking the request and loading the data")
        prepared = prepare(registry, options, explicit)
        stage("joining Ray")
        connect(ray_address)
        check_placement(options.workers)  # before the job row: a refusal leaves no trace
        job = registry.create_job(options.name, asdict(options))
        registry.start_job(job.id)
        if on_job is not None:
            on_job(job)
        try:
            with Heartbeat(lambda: registry.heartbeat(job.id)):  # alive through every step
                row = _run(registry, location, prepared, job.id, stage)
        except BaseException as exc:
            registry.finish_job(job.id, error=f"{type(exc).__name__}: {exc}")
            raise
        registry.finish_job(job.id)
        return row
    finally:
        registry.close()


def _run(
    registry: Registry,
    location: RegistryLocation,
    prepared: PreparedTask,
    job_id: str,
    stage: ProgressHook,
) -> TaskRow:
    options = prepared.options
    if prepared.data is None:
        stage("freeing the smallest weights of the imported network")
        rates = prepared.policy.rates(prepared.network.layers, None, prepared.network.config.name)
        outcome = imported_outcome(
            prepared.network, prepared.pretrained, rates, options.granularity
        )
        stage("committing")
        trained = TrainedTask(outcome, {}, "cpu", "")
        return registry.commit_task(_commit(prepared, trained, None, None, []))
    reference, jsd, found = None, None, []
    if prepared.parent_version_id is not None:
        names = comparable(registry.candidates(options.candidates))
        stage(f"similarity against {len(names)} candidate task(s)")
        found = similarities(location.db_url, location.store_uri, names, prepared.data.x_train)
        reference, jsd = choose_reference(found)
    rates = prepared.policy.rates(prepared.network.layers, jsd, prepared.network.config.name)
    base_private = (
        private_from_arrays(registry.load_private(reference))
        if reference is not None
        else prepared.pretrained
    )
    config = prepared.policy.train_config(train_config(options))
    if prepared.pretrained is not None:  # re-drawing would throw the pretrained values away
        config = replace(config, reinit_free=False)
    if options.import_head:  # the imported network is trained: rates by magnitude, fine-tune
        config = replace(config, epochs=0)
    stage("training" if options.workers == 1 else f"training on {options.workers} workers")
    job = JobHeartbeat(location.db_url, location.store_uri, job_id)
    inputs = (prepared.network, prepared.data, rates, config, base_private, job)
    if options.workers == 1:
        pending = train_task.options(num_gpus=gpu_request()).remote(
            *inputs, keep_head=options.import_head
        )
    else:
        from workers.distributed_training import train_task_on_workers  # Ray Train: only here

        pending = train_task_on_workers.remote(
            options.workers, *inputs, keep_head=options.import_head
        )
    trained: TrainedTask = _follow(registry, job_id, pending, stage)
    stage("committing")
    return registry.commit_task(_commit(prepared, trained, reference, jsd, found))


def comparable(candidates: list[TaskRow]) -> list[str]:
    """The candidates that have a data summary: a task imported without data has none, so
    it is never compared with (a later task with no comparable candidate takes the
    first-task rates, as when the candidate policy selects none)."""
    return [task.name for task in candidates if task.data_spec]


def _follow(registry: Registry, job_id: str, pending: ray.ObjectRef, stage: ProgressHook):
    """Wait for the training task, reporting each epoch the worker records in the job row."""
    seen = None
    while True:
        done, _ = ray.wait([pending], timeout=1.0)
        progress = registry.get_job(job_id).progress
        if progress and progress != seen:
            seen = progress
            stage(
                f"{progress['phase']} epoch {progress['epoch']}/{progress['epochs']}: "
                f"loss {progress['loss']:.4f}, val accuracy {100 * progress['val_accuracy']:.1f} %"
            )
        if done:
            return ray.get(pending)


def _commit(
    prepared: PreparedTask,
    trained: TrainedTask,
    reference: str | None,
    jsd: float | None,
    found: list[tuple[str, float]],
) -> TaskCommit:
    outputs = head_classes(trained.outcome.private, prepared.network.config)
    return task_commit(
        trained.outcome,
        name=prepared.options.name,
        data_spec=prepared.options.data,
        num_classes=outputs,
        parent_version_id=prepared.parent_version_id,
        summary=trained.summary,
        summary_kind=SUMMARY_KIND if trained.summary else NO_SUMMARY,
        reference=reference,
        jsd=jsd,
        similarities=found,
        extra={
            "candidate_accuracy": trained.outcome.candidate_accuracy,
            "policy": prepared.policy.name,
            "device": trained.device,
            "node": trained.node,
            "options": asdict(prepared.options),
            "eval_crop": prepared.data is not None and prepared.data.eval_crop,
        },
        class_names=_class_names(prepared, outputs),
    )


def _class_names(prepared: PreparedTask, outputs: int) -> list[str] | None:
    """``--classes``, else the data's (folder names, an npz's ``names``, built-in digits)."""
    if prepared.options.classes is not None:
        return read_class_names(prepared.options.classes)
    names = list(prepared.data.class_names) if prepared.data is not None else []
    return names if len(names) == outputs else None
