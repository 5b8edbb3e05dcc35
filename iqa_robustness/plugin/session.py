"""The pytest controller's side of a session: live MLflow, a graceful stop, and the session's files.

Only the controller process (the one process of a plain run, the controller under pytest-xdist)
writes the MLflow store, so a SQLite store has one writer. The parent run is created when the
grid's first case is about to run (under xdist: when the workers have collected) and ends
FINISHED, FAILED or KILLED; each case's run is logged as soon as its report reaches the
controller, from the JSON file the case wrote. A store that fails takes the session offline: no
more MLflow calls, one attempt at the end, else ``iqa-robustness upload`` (docs/tracking.md).

On SIGTERM (a GitLab job timeout or cancel) or Ctrl-C the session stops at once: the finished
cases are already in MLflow; the summary, per-image CSVs and table are written for them; the case
that was running is recorded as ``interrupted`` (xdist workers get the signal passed on and record
their own); ``--resume`` continues from there.

Nothing here imports torch until a grid case has run: the plugin loads this module in every
pytest run of an environment that has the package.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from iqa_robustness.runner.options import settings
from iqa_robustness.runner.sessions import SessionRecord
from iqa_robustness.scores.results import CaseResult, interrupted_message, unfinished_result

from .options import value, values
from .progress import CaseProgress

log = logging.getLogger("iqa_robustness")

#: user property a grid item carries into its reports: the case id, and the case's identity fields
CASE_PROPERTY = "iqa_case"
CASE_FIELDS_PROPERTY = "iqa_case_fields"

#: the grid's test functions (robustness_tests/test_robustness.py)
GRID_TESTS = ("test_image_specific_attack", "test_universal_attack", "test_certified_bound")

STASH_SESSION = pytest.StashKey[str]()  # the session id, the same in the controller and its workers
STASH_CONTROLLER = pytest.StashKey["SessionController"]()  # the controller process's SessionController


def session_settings(config: pytest.Config) -> dict[str, Any]:
    """The session's settings (the table's session options, as plain values), plus the suite's version."""
    from iqa_robustness import __version__

    return {"suite_version": __version__, **settings(values(config))}


class SessionController:
    """Registered as a plugin in the controller process; see the module docstring."""

    def __init__(self, config: pytest.Config, session_id: str) -> None:
        self.config = config
        self.session_id = session_id
        self.results_dir = Path(value(config, "results_dir"))
        self.cases_dir = self.results_dir / "cases" / session_id
        self.mlflow_uri: str | None = None if value(config, "no_mlflow") else (value(config, "mlflow_uri") or "")
        self.train_only = bool(value(config, "train_only"))
        self.logger: Any = None  # a tracking.SessionLogger once the session has begun with MLflow on
        self.record: SessionRecord | None = None
        self.tracking_error = ""
        self.running: dict[str, dict[str, Any]] = {}  # case id -> identity fields, for cases begun and not ended
        self.stop_reason = ""
        self._critical = 0
        self._pending = False
        self._previous_handlers: dict[int, Any] = {}
        self._workers: list[int] = []  # pytest-xdist worker processes
        self.progress = CaseProgress(self._write_line)

    # -- start ----------------------------------------------------------------------------
    def check_results_dir(self) -> None:
        """Stop the run with a usage error, before any case, when ``--results-dir`` cannot be written.

        Raises:
            pytest.UsageError: the folder is a file, lies under one, or is not writable; the message says which.
        """
        from iqa_robustness.runner.sessions import check_results_dir

        try:
            check_results_dir(self.results_dir)
        except ValueError as exc:
            from iqa_robustness.runner.options import flag

            raise pytest.UsageError(f"{flag('results_dir')}: {exc}; choose another {flag('results_dir')}") from None

    def begin(self) -> None:
        """Record the session and create its MLflow parent run (once); a stop signal waits until both are done.

        A ``--collect-only`` run lists cases and runs none: it records nothing and logs nothing.
        """
        if self.record is not None or self.config.option.collectonly:
            return
        self.check_results_dir()
        with self.critical():
            self._begin()

    def _begin(self) -> None:
        opt = functools.partial(value, self.config)
        self.record = SessionRecord(
            self.session_id,
            settings=session_settings(self.config),
            shard=opt("shard") or "",
            image_shard=opt("shard_images") or "",
        )
        if self.train_only:
            return  # training writes perturbations, not cases: nothing to record or log
        from iqa_robustness.tracking import session_tags

        weights = "random" if opt("random_weights") else "pretrained"
        tags = {**session_tags(device=str(opt("device")), weights_mode=weights), "session_id": self.session_id}
        tags["seed"] = str(self.record.settings.get("seed"))  # a robustness card names it (docs/card.md)
        if self.record.shard:
            tags["shard"] = self.record.shard
        if self.record.image_shard:
            tags["image_shard"] = self.record.image_shard
        self.record.tags = tags
        self.record.save(self.results_dir)
        self._install_signal_handlers()
        if self.mlflow_uri is None:
            return
        from iqa_robustness.conventions import default_tracking_uri
        from iqa_robustness.tracking import KIND_SESSION, KIND_SHARD, SessionLogger, TrackingError

        uri = self.mlflow_uri or default_tracking_uri(Path.cwd())
        kind = KIND_SHARD if (self.record.shard or self.record.image_shard) else KIND_SESSION
        self.logger = SessionLogger(uri, opt("experiment"), tags, self.results_dir, kind=kind)
        self.record.tracking_uri = uri  # the store `iqa-robustness upload` completes the session in
        try:
            self.record.mlflow_run_id = self.logger.start()
        except TrackingError as exc:  # the logger warned once and is offline: no call until the end
            self.tracking_error = str(exc)
        self.record.save(self.results_dir)

    # -- hooks ----------------------------------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        cases = sum(CASE_PROPERTY in dict(item.user_properties) for item in session.items)
        if cases:
            self.begin()
            self._count(cases)

    @pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: without xdist (absent, or -p no:xdist) never called
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under pytest-xdist, before any case is scheduled: a new store's set-up then holds up no worker."""
        cases = sum(any(f"::{name}[" in nodeid for name in GRID_TESTS) for nodeid in ids)
        if cases:
            self.begin()
            self._count(cases)

    def _count(self, cases: int) -> None:
        """The grid's cases are known: the progress lines begin, with what the grid is."""
        if self.config.option.collectonly:
            return
        from .grid import grid_description

        self.progress.begin(cases, grid_description(self.config))

    def _write_line(self, text: str) -> None:
        """A line of its own on the terminal, also after ``-q``'s progress dots (which leave no mark to end)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        reporter.ensure_newline()
        if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
            reporter.write("\n")
        reporter.write_line(text)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        case_id = props.get(CASE_PROPERTY)
        if case_id is None:
            return
        if report.when == "setup":
            self.running[case_id] = dict(props.get(CASE_FIELDS_PROPERTY) or {})
            self.progress.started(case_id)
            self.begin()
        elif report.when == "teardown":
            self.running.pop(case_id, None)
            self.progress.ended(case_id)
            path = self.cases_dir / f"{case_id}.json"
            if self.logger is not None and not self.logger.offline and path.is_file():
                from iqa_robustness.tracking import TrackingError

                with self.critical():
                    try:
                        self.logger.log_case(CaseResult.load_json(path))
                    except TrackingError as exc:  # the logger warned once and is offline: no call until the end
                        self.tracking_error = str(exc)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """A run that broke off before :meth:`finish` (an internal error) leaves no session run RUNNING."""
        if self.logger is not None:
            self.logger.close()

    # -- stopping -------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(signum)
            if signum == signal.SIGINT and current is not signal.default_int_handler:
                continue  # someone else handles Ctrl-C
            try:
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread
                return

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stop_reason:
            return  # a second signal while the session stops: let it write its files
        self.stop_reason = signal.Signals(signum).name
        self._workers = worker_pids(self.results_dir, self.session_id)
        for pid in self._workers:  # each pytest-xdist worker records the case it runs as interrupted, then stops
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        if self._critical:
            self._pending = True  # raised when the MLflow write in progress is complete
            return
        raise KeyboardInterrupt(f"stopped by {self.stop_reason}")

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A stop signal waits until the block (one MLflow write) is complete."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if not self._critical and self._pending:
                self._pending = False
                raise KeyboardInterrupt(f"stopped by {self.stop_reason}")

    # -- end ------------------------------------------------------------------------------
    def finish(self, exitstatus: int, write: Callable[[str], None]) -> list[CaseResult]:
        """Write every output of the session and end its MLflow run (from ``pytest_terminal_summary``)."""
        self.stop_reason = self.stop_reason or ("interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED else "")
        self._pending = False
        with self.critical():
            try:
                return self._finish(exitstatus, write)
            finally:
                self.restore_signal_handlers()

    def _finish(self, exitstatus: int, write: Callable[[str], None]) -> list[CaseResult]:
        if self.record is None:
            return []
        if self.train_only:
            folder = self.results_dir / "perturbations"
            files = sorted(folder.glob("*.json")) if folder.is_dir() else []
            write(f"--train-only: {len(files)} trained perturbation(s) in {folder}, for shards to load")
            return []
        from iqa_robustness.report.outputs import REPORT_DIR, write_outputs  # torch: only once a grid has run
        from iqa_robustness.scores.summary import load_cases

        if self.stop_reason:
            _wait_for_exit(self._workers, seconds=WORKER_STOP_SECONDS)
        for case_id, fields in self.running.items():  # begun, never ended: the stop came while it ran
            path = self.cases_dir / f"{case_id}.json"
            if not path.is_file():
                interrupted_result(case_id, fields, self.stop_reason or "the session ended").save_json(path)
        results = load_cases(self.cases_dir) if self.cases_dir.is_dir() else []
        interrupted = [r.case_id for r in results if r.status == "interrupted"]
        finished = [r for r in results if r.status != "interrupted"]
        from iqa_robustness.tracking import result_tags, session_status

        tests_failed = exitstatus == pytest.ExitCode.TESTS_FAILED
        status = session_status(results, stopped=bool(self.stop_reason), tests_failed=tests_failed)
        end_tags = result_tags(finished)
        self.record.tags.update(end_tags)
        report = None
        if results:
            from iqa_robustness.scores.verdict import policy_for

            policy = policy_for(value(self.config, "fooled_gain"))
            write_outputs(results, self.results_dir, write, {**self.record.provenance(), "status": status}, policy)
            report = self.results_dir / REPORT_DIR
        resumed = sum(bool(r.resumed_from) for r in finished)
        if resumed:
            write(f"--resume: {resumed} of {len(finished)} case(s) reused from earlier sessions in {self.results_dir}")
        if self.logger is not None:
            from iqa_robustness.tracking import TrackingError

            try:
                self.logger.finish(finished, status, tags=end_tags, interrupted=interrupted, report=report)
                self.record.mlflow_run_id, self.tracking_error = self.logger.run_id or "", ""
                if self.logger.missed:
                    write(f"MLflow failed during the session and answered again at its end: {self.logger.missed}")
                write(
                    f"MLflow: experiment {self.logger.experiment!r}, {self.logger.kind} run {self.logger.run_id} "
                    f"({status}, {len(finished)} case runs) at {self.logger.uri}"
                )
            except TrackingError as exc:
                self.tracking_error = str(exc)
        if self.tracking_error:
            write(f"MLflow logging failed: {self.tracking_error}")
        if self.stop_reason:
            names = f": {', '.join(interrupted)} recorded as interrupted" if interrupted else ""
            write(
                f"stopped by {self.stop_reason} after {len(finished)} finished case(s){names}; "
                "run the same command with --resume to run only what is missing"
            )
        self.record.end(self.results_dir, status.lower())
        shutil.rmtree(_workers_dir(self.results_dir, self.session_id), ignore_errors=True)
        return results


#: how long a stopped session waits for its xdist workers to record their interrupted cases
WORKER_STOP_SECONDS = 10.0


def _wait_for_exit(pids: list[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)


def _workers_dir(results_dir: Path, session_id: str) -> Path:
    return Path(results_dir) / "sessions" / f"{session_id}.workers"


def worker_pids(results_dir: Path, session_id: str) -> list[int]:
    """The process ids the session's pytest-xdist workers announced (:func:`stop_on_sigterm`)."""
    folder = _workers_dir(results_dir, session_id)
    return [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []


def stop_on_sigterm(results_dir: Path, session_id: str) -> None:
    """In a pytest-xdist worker: SIGTERM raises KeyboardInterrupt, so the running case records itself as interrupted.

    The worker announces its process id in the results folder, so that a controller stopped by
    SIGTERM alone (not its whole process group) passes the signal on.
    """

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: let the record be written
        raise KeyboardInterrupt("stopped by SIGTERM")

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, on_sigterm)
        folder = _workers_dir(results_dir, session_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(os.getpid())).touch()


def interrupted_result(case_id: str, fields: dict[str, Any], reason: str) -> CaseResult:
    """The record of a case the session was stopped in (no rows; ``--resume`` runs it again)."""
    return unfinished_result(case_id, fields, "interrupted", interrupted_message(reason))
