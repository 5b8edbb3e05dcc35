"""A session's record in its results folder: ``sessions/<id>.json``, beside ``cases/<id>/``.

Written when a session starts (status ``running``) and again when it ends, so a killed runner
still leaves one. It holds the settings that decide the numbers, the shard it ran, and where its
MLflow run is; ``iqa-robustness merge`` reads it to check that shards belong to one grid.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

#: settings that may differ between shards of one grid (which part ran, where, how fast)
LOCAL_SETTINGS = frozenset({"shard", "image_shard", "device", "batch_size", "resume", "results_dir"})


def now_text() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class SessionRecord:
    """One session of the suite as its results folder knows it.

    Attributes:
        session: the id (the folder name under ``cases/``).
        started, finished: UTC times, ISO 8601.
        status: ``running``, ``finished``, ``failed`` or ``killed``.
        settings: the options of the session (grid, image size, seed, weights mode, ...).
        shard, image_shard: ``K/N`` when the session ran one shard of the grid or of the images.
        mlflow_run_id, tracking_uri: its parent run, when it logged one.
        merged_from: for a merged session, the sessions it combines.
        tags: where the numbers come from (git commit and branch, CI job, device, weights mode,
            library versions; see :func:`iqa_robustness.tracking.session_tags`), for the report.
    """

    session: str
    started: str = dataclasses.field(default_factory=now_text)
    finished: str = ""
    status: str = "running"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    shard: str = ""
    image_shard: str = ""
    mlflow_run_id: str = ""
    tracking_uri: str = ""
    merged_from: list[str] = dataclasses.field(default_factory=list)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)

    def provenance(self) -> dict[str, str]:
        """The tags plus the session's own facts (id, times, shard, MLflow run), as the report shows them."""
        facts = {
            "session_id": self.session,
            "started": self.started,
            "finished": self.finished,
            "shard": self.shard,
            "image_shard": self.image_shard,
            "mlflow_run_id": self.mlflow_run_id,
            "merged_from": ", ".join(self.merged_from),
        }
        return {**self.tags, **{k: v for k, v in facts.items() if v}}

    @staticmethod
    def path_in(results_dir: Path, session: str) -> Path:
        return Path(results_dir) / "sessions" / f"{session}.json"

    def cases_dir(self, results_dir: Path) -> Path:
        return Path(results_dir) / "cases" / self.session

    def save(self, results_dir: Path) -> Path:
        path = self.path_in(results_dir, self.session)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, default=str))
        tmp.replace(path)
        return path

    def end(self, results_dir: Path, status: str) -> Path:
        self.status, self.finished = status, now_text()
        return self.save(results_dir)

    @classmethod
    def load(cls, path: Path) -> SessionRecord:
        data = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def latest_session(results_dir: Path) -> SessionRecord:
    """The newest session of a results folder that has case results.

    Raises:
        FileNotFoundError: the folder has no session record with results; the message says what is there.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"{results_dir} is not a folder; give the --results-dir of a session")
    records = []
    for path in (results_dir / "sessions").glob("*.json"):
        try:
            record = SessionRecord.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if any(record.cases_dir(results_dir).glob("*.json")):
            records.append(record)
    if not records:
        raise FileNotFoundError(
            f"no session with case results in {results_dir} (expected sessions/<id>.json and cases/<id>/*.json, "
            "as a pytest session of the suite writes them)"
        )
    return max(records, key=lambda r: r.started)


def check_results_dir(path: str | Path) -> Path:
    """``path`` if a session can write its results folder there (checked without creating anything).

    Walks up to the nearest folder that exists: it must be a folder (not a file), writable and
    searchable by this user, on a file system mounted read-write.

    Raises:
        ValueError: ``path`` is a file, lies under a file, or cannot be written; the message names
            the path in the way and why.
    """
    path = Path(path).expanduser()
    target = path.absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    where = "is" if existing == target else f"cannot be created: {existing} is"
    if not existing.is_dir():
        raise ValueError(f"results folder {path} {where} a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        mode = existing.stat().st_mode & 0o777
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        why = "on a read-only file system" if read_only else f"not writable by this user (mode {mode:o})"
        raise ValueError(f"results folder {path} {where} {why}")
    return path
