"""A session named on the command line: a results folder, or a reference into the MLflow store.

``compare``, ``baseline`` and ``report`` take either. A folder (a pytest ``--results-dir`` or a
``merge --out``) gives its newest session, read from disk with every per-image row; anything
else is looked up in the store (:func:`iqa_robustness.tracking.find_session`: a run id, a
commit, ``latest``/``previous`` or a branch), whose per-image CSVs are downloaded when needed.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import open_store


@dataclasses.dataclass
class NamedSession:
    """A session's cases and where they come from.

    Attributes:
        ref: as given on the command line.
        label: short name for file names (the run id's or session id's first 8 characters).
        description: one line for headers.
        cases: :class:`iqa_robustness.tracking.LoggedCase` list, sorted by case key.
        tags: the session's tags (MLflow) or settings (a folder's session record).
        run: the MLflow session run, or None for a folder.
        results: a folder's case results as the suite wrote them (None for a store session).
    """

    ref: str
    label: str
    description: str
    cases: list[Any]
    tags: dict[str, str]
    run: Any = None
    results: list[Any] | None = None
    _client: Any = None
    _tmp: Any = None

    def rows(self, case: Any) -> list[dict]:
        """The case's per-image rows (downloaded from the store on first use)."""
        from iqa_robustness.tracking import TrackingError, load_case_rows

        if case.rows is not None:
            return case.rows
        try:
            return load_case_rows(self._client, case, self.scratch)
        except TrackingError as exc:
            raise CommandError(str(exc)) from exc

    @property
    def scratch(self) -> Path:
        """A temporary folder for downloads, removed with this object."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="iqa-robustness-session-")
        return Path(self._tmp.name)

    def case_results(self) -> list[Any]:
        """The session's cases as :class:`~iqa_robustness.scores.results.CaseResult` with rows and files.

        A folder's are read as written (files whose stored path moved are looked for beside the
        folder's ``artifacts/<case>/``); a store's are rebuilt from its runs, with their per-image
        CSVs and small files downloaded.
        """
        if self.results is not None:
            return [_found_files(r, Path(self.ref)) for r in self.results]
        from iqa_robustness.scores.results import CaseResult
        from iqa_robustness.scores.transfer import METRIC_PREFIX, transfer_from_metrics
        from iqa_robustness.tracking import download_case_files

        out = []
        for case in self.cases:
            rows = self.rows(case) if case.status in ("passed", "failed") else []
            amplitude = float(case.amplitude) if case.amplitude not in ("", "None") else None
            scores = {k: v for k, v in case.metrics.items() if k not in _MEASURED and not k.startswith(METRIC_PREFIX)}
            result = CaseResult(
                case_id=case.case_id, metric=case.metric, attack=case.attack, dataset=case.dataset,
                params=dict(case.params), rows=rows, scores=scores, lower_better=case.lower_better,
                weights_mode=case.weights_mode, amplitude=amplitude, train_dataset=case.train_dataset or None,
                status=case.status, message=case.message,
                seconds_per_image=case.metrics.get("seconds_per_image", float("nan")),
                peak_memory_mb=case.metrics.get("peak_memory_mb", float("nan")),
            )  # fmt: skip
            result.transfer = transfer_from_metrics(case.metrics)
            result.artifacts = download_case_files(self._client, case, self.scratch / "files")
            out.append(result)
        return out


#: logged case metrics that are measurements of the run, not scores
_MEASURED = frozenset({"seconds_per_image", "peak_memory_mb", "n_images", "n_skipped", "psnr", "ssim", "mse"})


def _found_files(result: Any, folder: Path) -> Any:
    for name, path in list(result.artifacts.items()):
        if not Path(path).exists():
            moved = folder / "artifacts" / result.case_id / name
            if moved.exists():
                result.artifacts[name] = str(moved)
    return result


def is_results_folder(ref: str) -> bool:
    return Path(ref).is_dir()


#: help of the ``--metric`` option of the commands that read a session
METRIC_HELP = "only these metrics' cases (comma list); store look-ups find sessions that ran it"


def metric_list(text: str | None) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; nothing for None or blanks."""
    return [m.strip() for m in (text or "").split(",") if m.strip()]


def load_named_session(
    ref: str, args: argparse.Namespace, *, metrics: Sequence[str] = (), store: Any = None
) -> NamedSession:
    """The session ``ref`` names (see the module docstring), with only the cases of ``metrics`` when given.

    Args:
        metrics: keep these metrics' cases; one metric also narrows store look-ups (``latest``,
            a commit, a branch) to the sessions that ran it.
        store: an already opened ``(client, uri)`` pair, else opened from ``args``.

    Raises:
        CommandError: nothing matches, or the store or folder cannot be read; the message says why.
    """
    session = _load(ref, args, metrics[0] if len(metrics) == 1 else None, store)
    if metrics:
        session.cases = [c for c in session.cases if c.metric in metrics]
        if session.results is not None:
            session.results = [r for r in session.results if r.metric in metrics]
    return session


def _load(ref: str, args: argparse.Namespace, metric: str | None, store: Any) -> NamedSession:
    if is_results_folder(ref):
        return _folder_session(Path(ref))
    from iqa_robustness.tracking import TrackingError, describe_session, find_session, load_session_cases

    client, uri = store if store is not None else open_store(args)
    try:
        run = find_session(client, args.experiment, ref, uri, metric=metric)
        cases = load_session_cases(client, run)
    except TrackingError as exc:
        raise CommandError(str(exc)) from exc
    return NamedSession(
        ref, run.info.run_id[:8], describe_session(run), cases, dict(run.data.tags), run=run, _client=client
    )


def _folder_session(folder: Path) -> NamedSession:
    from iqa_robustness.runner.sessions import latest_session
    from iqa_robustness.scores.summary import load_cases
    from iqa_robustness.tracking import logged_case

    record = latest_session(folder)
    results = load_cases(record.cases_dir(folder))
    cases = sorted((logged_case(r) for r in results), key=lambda c: c.key)
    settings = {k: str(v) for k, v in record.settings.items()}
    description = f"{folder} (session {record.session}, started {record.started}, {len(cases)} cases)"
    tags = {**settings, **record.provenance()}
    return NamedSession(str(folder), record.session[:8], description, cases, tags, results=results)


def add_session_argument(parser: argparse.ArgumentParser) -> None:
    """The optional positional ``SESSION`` of the commands that read one session (default ``latest``)."""
    parser.add_argument(
        "session",
        nargs="?",
        default="latest",
        metavar="SESSION",
        help="results folder, run id, commit, 'latest' (default), 'previous' or branch",
    )


def add_fooled_gain_argument(parser: argparse.ArgumentParser) -> None:
    """``--fooled-gain``: the verdict's threshold (docs/verdict.md), checked as it is read."""

    def fooled_gain(text: str) -> float:
        from iqa_robustness.scores.verdict import parse_fooled_gain

        try:
            return parse_fooled_gain(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--fooled-gain",
        type=fooled_gain,
        default=None,
        help="the verdict's threshold: a metric is fooled when an attack's normalised gain reaches it (default 0.2)",
    )
