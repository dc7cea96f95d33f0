"""Where the per-image work of ``explain`` and ``evaluate`` runs: this process, or Ray Data.

Both subcommands reduce a run to ``process(session, loaded) -> rows`` for each pending item;
the driver writes the rows it gets back (CSV manifests) and lists bad files. Items reach
``process`` in batches of ``Job.batch_size``; a job's ``prepare(session, batch)`` runs first on
each batch's decoded items (``explain`` runs the model on all of them in one pass there).

The **local** engine decodes in ``DataLoader`` workers and runs ``process`` here. The **ray**
engine builds a Ray Dataset of the pending items, decodes them in Ray tasks, and runs
``process`` in ``map_batches`` actors — one per GPU in the cluster (else one per node), each
holding the model and the explanation service — so a dataset spreads over machines. Files that
``process`` writes land where the actors run: on a cluster, ``--out`` must be a shared path.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from app.explain.inputs import InvalidInputError

from .command_support import Session, default_workers, make_loader, open_session
from .datasets import CliError, Item, ItemDataset, Loaded

log = logging.getLogger(__name__)

#: ``process(session, loaded) -> rows``; module-level functions or partials (pickled to actors).
Process = Callable[[Session, Loaded], list[dict[str, object]]]
#: ``prepare(session, batch)`` before a batch's items are processed (same pickling rule).
Prepare = Callable[[Session, list[Loaded]], None]


@dataclass(frozen=True)
class Outcome:
    """One item's result: its rows, or why it could not be processed; ``model_failed`` when
    the model itself cannot explain (the same for every image: the run stops)."""

    item: Item
    rows: list[dict[str, object]]
    error: str | None = None
    model_failed: bool = False


@dataclass(frozen=True)
class Job:
    """Everything a worker needs (picklable): the model to open and the work per item."""

    dataset: ItemDataset
    process: Process
    model: str
    device: str | None
    threads: int | None
    allow_fallback: bool = True
    cwd: str = "."
    batch_size: int = 1
    prepare: Prepare | None = None

    def process_batch(self, session: Session, batch: list[Loaded]) -> Iterator[Outcome]:
        """Every item of ``batch`` in turn (each handed on as soon as it is processed), after
        :attr:`prepare` on those that decoded."""
        if self.prepare is not None:
            self.prepare(session, [loaded for loaded in batch if not loaded.error])
        for loaded in batch:
            yield process_loaded(session, loaded, self.process)


def process_loaded(session: Session, loaded: Loaded, process: Process) -> Outcome:
    """``process`` one decoded item; unreadable files and bad inputs become an error outcome,
    a failure inside the model (no spatial map, an unsupported layer) a model failure."""
    if loaded.error:
        return Outcome(loaded.item, [], loaded.error)
    try:
        return Outcome(loaded.item, process(session, loaded))
    except InvalidInputError as error:
        return Outcome(loaded.item, [], str(error))
    except (ValueError, RuntimeError) as error:
        return Outcome(loaded.item, [], str(error), model_failed=True)


def stop_on_model_failure(outcome: Outcome, model: str) -> None:
    """Report a model failure once, as the model's (exit 1), instead of per image."""
    if outcome.model_failed:
        raise CliError(f"model {model!r} cannot explain images: {outcome.error}", code=1)


def run_local(session: Session, job: Job, workers: int) -> Iterator[Outcome]:
    """Decode in ``workers`` DataLoader processes, process here, in order. An outcome is handed
    on once the files its item queued on ``session.maps`` are written, one item later, so the
    writes overlap the next item's model work."""
    previous: Outcome | None = None
    for batch in make_loader(job.dataset, workers, job.batch_size):
        for outcome in job.process_batch(session, batch):
            if previous is not None:
                yield written(session, previous)
            previous = outcome
    if previous is not None:
        yield written(session, previous)


def written(session: Session, outcome: Outcome) -> Outcome:
    """``outcome`` once its item's files exist; a failed write becomes the item's error."""
    try:
        session.maps.wait(outcome.item.key)
    except OSError as error:
        return Outcome(outcome.item, [], f"could not write its files: {error}")
    return outcome


def run_job(session: Session, job: Job, args) -> Iterator[Outcome]:
    """The engine ``args`` asks for (``--engine``, ``--workers``, ``--ray-address``,
    ``--ray-cpus``)."""
    if args.engine == "ray":
        return run_ray(replace(job, cwd=os.getcwd()), args.ray_address, args.ray_cpus)
    workers = default_workers() if args.workers is None else args.workers
    return run_local(session, job, workers)


# --------------------------------------------------------------------------------------------
# Ray


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError as error:
        raise CliError(
            "--engine ray needs Ray Data: pip install 'ray[data]>=2.40,<3' "
            f"(or use the default --engine local) ({error})"
        ) from error
    return ray


@contextmanager
def ray_runtime(address: str | None, cpus: int | None) -> Iterator[object]:
    """Connect to the cluster at ``address``, or start a local runtime (``cpus`` CPUs) and shut
    it down afterwards. A runtime already initialised in this process is used as it is."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, object] = {"include_dashboard": False, "log_to_driver": False}
    address = address or os.environ.get("RAY_ADDRESS")  # set inside `ray job submit`
    if address:
        options["address"] = address
    else:
        options["num_cpus"] = cpus or os.cpu_count() or 1
        # Local workers import ``app`` from where this driver does.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
    try:
        ray.init(**options)
    except Exception as error:  # Ray raises bare Exceptions too (e.g. a start-up timeout)
        raise CliError(f"could not start or reach Ray ({address or 'local'}): {error}") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def _decode(row: dict[str, object], job: Job) -> dict[str, object]:
    """Ray Data map: item index -> the pickled :class:`Loaded` (a decode error stays inside)."""
    os.chdir(job.cwd)  # relative paths mean what they meant to the driver
    loaded = job.dataset[int(row["index"])]
    return {"index": row["index"], "loaded": pickle.dumps(loaded)}


class RayWorker:
    """A ``map_batches`` actor: opens the model and the service once, processes batches."""

    def __init__(self, job: Job) -> None:
        self.job = job
        os.chdir(job.cwd)
        self.session = open_session(job.model, job.device, job.threads, job.allow_fallback)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        session = self.session
        loaded = [pickle.loads(blob) for blob in batch["loaded"]]
        outcomes = [written(session, o) for o in self.job.process_batch(session, loaded)]
        return {"index": list(batch["index"]), "outcome": [pickle.dumps(o) for o in outcomes]}


def actor_layout(ray, threads: int | None) -> dict[str, object]:
    """One actor per GPU when the cluster has GPUs, else one per node with ``threads`` CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return {"compute": ray.data.ActorPoolStrategy(size=gpus), "num_gpus": 1, "num_cpus": 1}
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    cpus = max(1, int(resources.get("CPU", 1)))
    per_actor = min(cpus, threads or 1)
    actors = max(1, min(nodes, cpus // per_actor))
    return {"compute": ray.data.ActorPoolStrategy(size=actors), "num_cpus": per_actor}


def run_ray(job: Job, address: str | None, cpus: int | None) -> Iterator[Outcome]:
    """Process the job's items on Ray Data; outcomes come back in item order."""
    with ray_runtime(address, cpus) as ray:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        layout = actor_layout(ray, job.threads)
        log.info("ray: %s over %d item(s)", layout, len(job.dataset))
        dataset = ray.data.from_items([{"index": i} for i in range(len(job.dataset))])
        decoded = dataset.map(_decode, fn_kwargs={"job": job})
        results = decoded.map_batches(
            RayWorker, fn_constructor_kwargs={"job": job}, batch_size=job.batch_size, **layout
        )
        try:
            for row in results.iter_rows():
                yield pickle.loads(row["outcome"])
        except ray.exceptions.RayError as error:
            raise CliError(f"the Ray job failed: {error}", code=1) from error
