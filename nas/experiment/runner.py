"""`hwnas run EXP.yaml`: profile -> train -> search -> export, cached and resumable.

Which run folder:
    the latest unfinished run of the same config (same name and settings) that no
    process is driving is resumed; otherwise a new run is created. `new=True` always
    creates one. `from_step` creates a new run in which that step and every later one
    are computed afresh (earlier ones still come from the cache).
Each step, in order:
    skipped   not needed by this experiment (no supernet accuracy: no training; export: false)
    done      its folder in this run already holds step.json with the same key (a resumed run)
    cached    a finished folder with the same key exists in runs/.cache: linked in, not redone
    run       otherwise; partial work in the folder with the same key is resumed by the step
              itself (LUT chunks, training checkpoints, the search's study), work for another
              key is discarded first
The report is written at the end, and also when a step fails, showing how far it got.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nas.atomic import write_atomic
from nas.threads import configure as configure_threads
from nas.errors import NasError
from nas.experiment.cache import StepCache, output_digest, step_key
from nas.experiment.rundir import Run, now
from nas.experiment.schema import STEPS, Experiment, load_experiment, resolved_space
from nas.experiment.steps import compress as compress_step
from nas.experiment.steps import export as export_step
from nas.experiment.steps import profile as profile_step
from nas.experiment.steps import search as search_step
from nas.experiment.steps import train as train_step

ADAPTERS = {"profile": profile_step, "train": train_step, "search": search_step, "export": export_step,
            "compress": compress_step}


def select_run(exp: Experiment, config: Path, root: Path, new: bool = False,
               from_step: str | None = None) -> tuple[Run, bool]:
    """Pick the run folder of the validated config: (run, resumed)."""
    if from_step is not None and from_step not in STEPS:
        raise NasError(f"--from {from_step!r}: not a step; steps are {', '.join(STEPS)}")
    if not (new or from_step):
        run = Run.resumable(root, exp.name, exp.digest())
        if run is not None:
            return run, True
    run = Run.create(root, exp.name, exp.digest(), Path(config).read_text(), exp.model_dump(mode="json"), Path(config))
    return run, False


def run_experiment(config: Path, root: Path = Path("runs"), *, new: bool = False, from_step: str | None = None,
                   progress: bool = True, echo: Callable[[str], None] = print) -> Run:
    """Run (or resume) the experiment; returns its run folder."""
    config = Path(config)
    exp = load_experiment(config)
    parallelism = configure_threads(exp.threads)  # before the run's environment.json records it
    run, resumed = select_run(exp, config, root, new, from_step)
    with run.lock(), _warnings_logged(run):
        echo(f"{'resuming' if resumed else 'new'} run {run.path}")
        run.log(f"{'resumed' if resumed else 'started'} by pid {os.getpid()}; parallelism {parallelism.summary()}")
        run.update(status="running", started=now(), error=None)
        pipeline = Pipeline(exp, run, StepCache(root / ".cache"), resolved_space(exp, config.parent), progress, echo)
        forced = STEPS[STEPS.index(from_step):] if from_step else ()
        try:
            for step in STEPS:
                pipeline.step(step, force=step in forced)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            message = str(exc) if isinstance(exc, NasError) else f"{type(exc).__name__}: {exc}"
            run.update(status=status, error=message, stopped=now())
            run.log(f"{status}: {message}")
            _report(run)
            raise
        run.update(status="finished", finished=now())
        run.log("finished")
        _report(run)
    return run


class Pipeline:
    """The steps of one run: keys, cache, and the adapters' calls with this run's paths."""

    def __init__(self, exp: Experiment, run: Run, cache: StepCache, space: str, progress: bool,
                 echo: Callable[[str], None]) -> None:
        self.exp, self.run, self.cache, self.space, self.progress, self.echo = exp, run, cache, space, progress, echo
        self.outputs: dict[str, str] = {}  # step -> digest of what it produced (downstream keys hash these)

    def needed(self, step: str) -> bool:
        return {"train": self.exp.uses_supernet, "export": self.exp.export is not None,
                "compress": self.exp.compress is not None and self.exp.export is not None}.get(step, True)

    def key(self, step: str) -> tuple[str, dict[str, Any]]:
        adapter = ADAPTERS[step]
        upstream = {s: self.outputs[s] for s in adapter.READS if s in self.outputs}
        files = [_space_file(self.space)] + (profile_step.input_files(self.exp) if step == "profile" else [])
        if step == "train" and self.exp.dataset.get("source", "digits") != "digits":
            files.append(self.exp.dataset["source"])
        extra = {"host": profile_step.host(self.exp)} if step == "profile" else {}
        return step_key(step, adapter.inputs(self.exp), upstream, adapter.CODE, adapter.LIBRARIES, files, extra)

    def step(self, step: str, force: bool = False) -> None:
        if not self.needed(step):
            self.run.update_step(step, status="skipped")
            return
        key, record = self.key(step)
        folder = self.run.path / step
        finished = _finished(folder)
        if finished is not None and finished.get("key") == key and not force:
            self.outputs[step] = _outputs(folder, finished)
            self.run.update_step(step, status="done", key=key)
            self.echo(f"[{step}] already done in this run ({key})")
            return
        with self.cache.claim(step, key, lambda: self.echo(f"[{step}] waiting for another run doing the same work")):
            cached = None if force else self.cache.lookup(step, key)
            if cached is not None:
                self.cache.restore(step, key, folder)
                finished = _finished(folder)
                self.outputs[step] = _outputs(folder, finished)
                source = finished.get("run")
                self.run.update_step(step, status="cached", key=key, cached_from=source, finished=now())
                self.run.log(f"{step}: cached ({key}, from run {source})")
                self.echo(f"[{step}] cached: outputs of run {source} ({key})")
                return
            self._compute(step, key, record, folder, force)

    def _compute(self, step: str, key: str, record: dict[str, Any], folder: Path, force: bool) -> None:
        marker = folder / ".key"
        if folder.exists() and (not marker.is_file() or marker.read_text() != key or force):
            self.run.log(f"{step}: discarding partial work made for other inputs")
            shutil.rmtree(folder)
        resuming = marker.is_file()
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(marker, key)
        self.run.update_step(step, status="running", key=key, started=now())
        self.run.log(f"{step}: {'resuming' if resuming else 'started'} ({key})")
        self.echo(f"[{step}] {'resuming' if resuming else 'running'} ({key})")
        start = time.perf_counter()
        result = self.call(step, folder)
        seconds = time.perf_counter() - start
        outputs = output_digest(folder, result)
        write_atomic(folder / "step.json", json.dumps({"step": step, "key": key, "run": self.run.id,
                                                       "finished": now(), "seconds": seconds, "inputs": record,
                                                       "result": result, "outputs": outputs},
                                                      indent=2, default=str) + "\n")
        self.outputs[step] = outputs
        self.cache.publish(step, key, folder)
        self.run.update_step(step, status="finished", key=key, seconds=seconds, finished=now())
        self.run.log(f"{step}: finished in {seconds:.1f} s")
        self.echo(f"[{step}] finished in {seconds:.1f} s")

    def call(self, step: str, folder: Path) -> dict[str, Any]:
        exp, path = self.exp, self.run.path
        if step == "profile":
            from nas.space import load_space

            return {"sources": profile_step.run(exp, load_space(self.space), folder, self.progress)}
        if step == "train":
            return train_step.run(exp, self.space, folder, self.progress)
        if step == "search":
            profiled = _finished(path / "profile")["result"]["sources"]
            sources = search_step.search_sources(exp, profiled, path / "profile",
                                                 path / "train" if exp.uses_supernet else None)
            return search_step.run(exp, self.space, folder, sources, self.run.id, self.progress)
        if step == "compress":
            profiled = _finished(path / "profile")["result"]["sources"]
            return compress_step.run(exp, folder, path / "export", profiled, path / "profile", self.progress)
        summary = _finished(path / "search")["result"]["summary"]
        profiled = _finished(path / "profile")["result"]["sources"]
        train = path / "train" if exp.uses_supernet else None
        sources = search_step.search_sources(exp, profiled, path / "profile", train)  # what the search ran under
        return export_step.run(exp, self.space, folder, summary, train, self.run.id, sources)


def _space_file(space: str) -> str:
    """The YAML file a space is read from (its contents are part of every step's key)."""
    from nas.space import space_files

    return space if space.endswith((".yaml", ".yml")) else str(space_files()[space])


def _outputs(folder: Path, finished: dict[str, Any]) -> str:
    """The output digest a finished step recorded (computed for a folder from before it was recorded)."""
    return finished.get("outputs") or output_digest(folder, finished.get("result"))


def _finished(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "step.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _report(run: Run) -> None:
    from nas.experiment.report import write_report

    try:
        write_report(run)
    except Exception as exc:  # noqa: BLE001 - a report problem must not hide the run's own outcome
        run.log(f"report not written: {type(exc).__name__}: {exc}")


@contextmanager
def _warnings_logged(run: Run) -> Iterator[None]:
    """Warnings raised during the run also go to logs/run.log (they still reach stderr)."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        run.log(f"warning: {category.__name__}: {message}")
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
