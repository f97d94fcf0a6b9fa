"""Experiment trackers beside the run folder: TensorBoard, MLflow, Weights & Biases and a JSON Lines file.

`train.loggers` names them (`--logger`, repeatable); TensorBoard also follows `run.tensorboard` (auto: when installed),
as it always has. Rank 0 alone logs. Each tracker gets the config as parameters, every metrics.csv row at its
optimizer step, the run's wall time and device, and, where it keeps files (MLflow, W&B), best.pt and last.pt
when the run finishes. Each honours its own environment (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME, WANDB_MODE,
WANDB_PROJECT...). A resumed run continues the same tracker run: their ids are kept in RUN/trackers.json. A
tracker that fails (its server gone) prints one line once and is dropped: the run goes on, and its folder keeps
everything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import gate
from ..config import TRACKERS
from ..errors import BadInput
from ..files import atomic_write_text, open_own_file
from . import tensorboard

# The package each needs, and the extra that installs it (jsonl needs nothing).
PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
IDS_FILE = "trackers.json"  # the tracker runs' ids, so that a resume continues them
JSONL_FILE = "metrics.jsonl"
# MLflow's HTTP client retries a gone server for minutes by default; a run should lose one line, not its time.
MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def resolve(cfg) -> tuple[str, ...]:
    """The trackers a run of `cfg` logs to: train.loggers, with TensorBoard first where run.tensorboard says so.
    An unknown name, or a tracker whose package is missing, is one line naming the extra."""
    names = list(dict.fromkeys(cfg.train.loggers))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise BadInput(f"train.loggers: unknown tracker {unknown[0]!r}; choose from {', '.join(TRACKERS)}")
    if "tensorboard" in names:
        if cfg.run.tensorboard == "off":
            raise BadInput("train.loggers names tensorboard but run.tensorboard is off: drop one of them")
        tensorboard.check("on")
    elif tensorboard.check(cfg.run.tensorboard):
        names.insert(0, "tensorboard")
    for name in names:
        if name in PACKAGES:
            module, extra = PACKAGES[name]
            try:
                __import__(module)
            except ImportError:
                raise BadInput(f"train.loggers: {name} needs the {module} package: "
                               f'pip install "resnet-cli[{extra}]"') from None
    return tuple(names)


@dataclass(frozen=True)
class Start:
    """What a tracker is told when the run folder opens."""

    run_dir: Path
    name: str  # the run's name (its folder's)
    params: dict[str, Any]  # the config, flattened: {"train.lr": 0.1, ...}
    step: int  # where the run starts: 0, or the resume step
    device: str
    ids: dict[str, str]  # the tracker runs' ids from an earlier start of this run


@dataclass(frozen=True)
class End:
    wall_seconds: float
    device: str
    finished: bool  # the run reached its end (not stopped by a signal or a failure)
    files: tuple[Path, ...]  # best.pt and last.pt


class Tracker:
    name = ""
    where = ""  # set by start: what the run's first lines say of this tracker ("run ID in ... at URI")

    def start(self, s: Start) -> str | None:
        """Open (or continue) the tracker's run; return its id to keep for a resume."""
        return None

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    def end(self, e: End) -> None:
        pass


def numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool)}


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def start(self, s: Start) -> None:
        self.scalars = tensorboard.Scalars(s.run_dir, purge_step=s.step + 1 if s.step else None)

    def epoch(self, row: dict[str, Any]) -> None:
        self.scalars.add(row)

    def end(self, e: End) -> None:
        self.scalars.close()


class JsonLinesTracker(Tracker):
    """RUN/metrics.jsonl: a start line (the config, the step, the device), a line per epoch, an end line."""

    name = "jsonl"

    def _write(self, event: dict[str, Any]) -> None:
        with open_own_file(self.path, "the metrics log", append=True) as f:
            f.write(json.dumps(event, sort_keys=False) + "\n")

    def start(self, s: Start) -> None:
        self.path = s.run_dir / JSONL_FILE
        self._write({"event": "start", "time": time.time(), "step": s.step, "resumed": bool(s.step),
                     "device": s.device, "config": s.params})

    def epoch(self, row: dict[str, Any]) -> None:
        self._write({"event": "epoch", "time": time.time(), **row})

    def end(self, e: End) -> None:
        self._write({"event": "end", "time": time.time(), "wall_seconds": round(e.wall_seconds, 3),
                     "device": e.device, "finished": e.finished, "files": [str(f) for f in e.files]})


class MlflowTracker(Tracker):
    name = "mlflow"

    def start(self, s: Start) -> str:
        for key, value in MLFLOW_ENV.items():
            os.environ.setdefault(key, value)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient()  # MLFLOW_TRACKING_URI, else MLflow's default store
        run_id = s.ids.get(self.name)
        if run_id:  # a resume: the same MLflow run, its parameters as first logged
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
        else:
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "resnet-cli"
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else client.create_experiment(experiment)
            run_id = client.create_run(exp_id, run_name=s.name, tags={"resnet_cli.run_dir": str(s.run_dir),
                                                                     "device": s.device}).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in s.params.items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
                client.log_batch(run_id, params=params[i:i + 100])
        self.run_id = run_id
        import mlflow

        self.where = (f"{'continuing ' if s.ids.get(self.name) else ''}run {run_id} at {mlflow.get_tracking_uri()}")
        return run_id

    def epoch(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, int(row["step"]))
                                                    for k, v in numbers(row).items()])

    def end(self, e: End) -> None:
        self.client.log_metric(self.run_id, "wall_seconds", e.wall_seconds)
        self.client.set_tag(self.run_id, "device", e.device)
        if e.finished:
            for f in e.files:
                self.client.log_artifact(self.run_id, str(f), artifact_path="checkpoints")
        self.client.set_terminated(self.run_id, status="FINISHED" if e.finished else "KILLED")


class WandbTracker(Tracker):
    name = "wandb"

    def start(self, s: Start) -> str:
        import wandb

        run_id = s.ids.get(self.name)  # None: W&B makes one, kept for a resume
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "resnet-cli", name=s.name, id=run_id,
                              resume="allow", config=s.params, dir=str(s.run_dir), reinit="create_new")
        mode = self.run.settings.mode
        self.where = (f"{'continuing ' if run_id else ''}run {self.run.id} in project {self.run.project}"
                      f"{' (offline: wandb sync ' + str(s.run_dir / 'wandb') + ')' if mode == 'offline' else ''}")
        return self.run.id

    def epoch(self, row: dict[str, Any]) -> None:
        self.run.log(numbers(row), step=int(row["step"]))

    def end(self, e: End) -> None:
        import wandb

        self.run.summary.update({"wall_seconds": e.wall_seconds, "device": e.device})
        if e.finished and e.files:
            artifact = wandb.Artifact(f"{self.run.id}-checkpoints", type="model")
            for f in e.files:
                artifact.add_file(str(f))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if e.finished else 1)


KINDS: dict[str, type[Tracker]] = {"tensorboard": TensorBoardTracker, "jsonl": JsonLinesTracker,
                                   "mlflow": MlflowTracker, "wandb": WandbTracker}


class Trackers:
    """The run's trackers as one: each call goes to every tracker still working; one that raises is named in one
    line (`say`) and dropped."""

    def __init__(self, names: tuple[str, ...], say: Callable[[str], None]) -> None:
        self.trackers = [KINDS[n]() for n in names]
        self.say = say
        self.run_dir: Path | None = None

    def _each(self, what: str, *args) -> dict[str, Any]:
        out = {}
        for t in list(self.trackers):
            try:
                out[t.name] = getattr(t, what)(*args)
            except Exception as e:  # a tracker's failure is never the run's
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:600]
                self.say(f"{t.name}: {first}; not logging to {t.name} any more (the run folder keeps everything)")
                self.trackers.remove(t)
        return out

    def start(self, run_dir: Path, cfg, step: int, device: str) -> None:
        self.run_dir = run_dir
        ids = read_ids(run_dir)
        params = flatten(dataclasses.asdict(cfg))
        got = self._each("start", Start(run_dir, run_dir.name, params, step, device, ids))
        for t in self.trackers:
            if t.where:
                self.say(f"{t.name}: {t.where}")
        new = {**ids, **{k: v for k, v in got.items() if isinstance(v, str)}}
        if new != ids:
            atomic_write_text(run_dir / IDS_FILE, json.dumps(new, indent=2) + "\n")

    def epoch(self, row: dict[str, Any]) -> None:
        self._each("epoch", row)

    def end(self, wall_seconds: float, device: str, finished: bool) -> None:
        if self.run_dir is None:
            return
        files = tuple(p for p in (self.run_dir / "best.pt", self.run_dir / "last.pt") if p.is_file())
        self._each("end", End(wall_seconds, device, finished, files))
        self.trackers = []


def read_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / IDS_FILE
    if not path.is_file():
        return {}
    found = gate.json_bytes(gate.read_file(path, gate.Limits(2**20, keys=(f"the bound on {IDS_FILE}",
                                                                           "data.read_timeout"))), str(path))
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        raise BadInput(f"{path} is not a map of tracker ids; remove it to start new tracker runs")
    return found


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
