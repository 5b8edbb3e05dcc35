"""Long sessions: live MLflow, a SIGTERM in the middle, ``--resume``, grid and image shards, ``merge``, a
tracking server that goes away in the middle.

Every session is a real ``pytest robustness_tests`` process on the benchmark's 5 test images
(CNNIQA with its LIVE weights, small images, CPU) with a real SQLite MLflow store, read back by
this process while the session runs. The tests share one uninterrupted reference session.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow_server import MlflowServer

from iqa_robustness.conventions import DEFAULT_EXPERIMENT

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = REPO_ROOT / "robustness_tests"
# Columns that measure the machine, not the metric.
MACHINE_COLUMNS = {"seconds_per_image", "peak_memory_mb"}
# fgsm and ifgsm finish quickly; madc with 5x its default iterations runs for seconds, long enough to be stopped in.
GRID = (
    "--metric", "cnniqa-live", "--attack", "fgsm,ifgsm,madc(iters=40),uap",
    "--dataset", "msu5", "--train-dataset", "msu5", "--image-size", "96", "--uap-steps", "3", "--amplitude", "0.2,0.8",
)  # fmt: skip
MADC = "madc(iters=40)-cnniqa-live-msu5"
GRID_CASES = {
    "fgsm-cnniqa-live-msu5",
    "ifgsm-cnniqa-live-msu5",
    MADC,
    "uap-cnniqa-live-msu5-on-msu5-amp0.2",
    "uap-cnniqa-live-msu5-on-msu5-amp0.8",
}


def _env(torch_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", TORCH_HOME=str(torch_home), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return env


def _command(workdir: Path, weights: Path, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", *GRID,
        "--weights-dir", str(weights), "--mlflow-uri", f"sqlite:///{workdir / 'mlflow.db'}", *args,
    ]  # fmt: skip


def run_grid(workdir: Path, weights: Path, torch_home: Path, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        _command(workdir, weights, *args),
        cwd=workdir,
        env=_env(torch_home),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc


def run_cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """``iqa-robustness *args`` in this process (its imports are loaded already)."""
    from iqa_robustness.cli.main import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


def summary_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {row["case_id"]: row for row in csv.DictReader(fh)}


def assert_same_summary(found: dict[str, dict[str, str]], expected: dict[str, dict[str, str]]) -> None:
    """Every score of every case equal within 1e-6 relative (timings apart)."""
    assert set(found) == set(expected)
    for case_id, row in expected.items():
        other = found[case_id]
        for key, value in row.items():
            if key in MACHINE_COLUMNS:
                continue
            try:
                a, b = float(value), float(other[key])
            except ValueError:
                assert other[key] == value, (case_id, key)
                continue
            if math.isnan(a):
                assert math.isnan(b), (case_id, key)
            else:
                assert b == pytest.approx(a, rel=1e-6, abs=1e-9), (case_id, key, a, b)


def store(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")


def sessions(client, kind: str = "session") -> list:
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.run_kind = '{kind}'", order_by=["attributes.start_time ASC"])


def parent_logged(results_dir: Path) -> bool:
    """The session's record names its MLflow run: the store is set up, a reader will not race its creation."""
    import json

    for path in (results_dir / "sessions").glob("*.json"):
        try:
            if json.loads(path.read_text()).get("mlflow_run_id"):
                return True
        except ValueError:  # being replaced
            continue
    return False


def children(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def cases_of(results_dir: Path) -> dict[str, dict]:
    """case id -> its JSON (as dict) of the newest session in a results folder."""
    import json

    newest = max((results_dir / "cases").iterdir(), key=lambda d: d.stat().st_mtime)
    return {p.stem: json.loads(p.read_text()) for p in newest.glob("*.json")}


@pytest.fixture(scope="module")
def weights(shared_dir: Path) -> Path:
    return shared_dir / "weights"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, weights, torch_home) -> Path:
    """The uninterrupted, unsharded session of the grid: its working folder."""
    workdir = tmp_path_factory.mktemp("reference")
    proc = run_grid(workdir, weights, torch_home)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(cases_of(workdir / "results")) == GRID_CASES
    return workdir


def test_a_stopped_session_keeps_its_finished_cases_and_resume_runs_only_the_rest(
    tmp_path, weights, torch_home, reference
):
    import mlflow.tracking  # noqa: F401  (imported before the session starts: polling is then quick)

    session = subprocess.Popen(
        _command(tmp_path, weights),
        cwd=tmp_path,
        env=_env(torch_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[int] = []  # children of the running session, as a second process reads them
    deadline = time.monotonic() + 300
    reader = None
    try:
        while time.monotonic() < deadline and session.poll() is None:
            if reader is None and parent_logged(tmp_path / "results"):
                reader = store(tmp_path)
            runs = sessions(reader) if reader is not None else []
            if runs:
                assert runs[-1].info.status == "RUNNING"
                count = len(children(reader, runs[-1].info.run_id))
                if not seen or count != seen[-1]:
                    seen.append(count)
                if count >= 2:
                    time.sleep(0.5)  # into the third case (madc, seconds)
                    session.send_signal(signal.SIGTERM)
                    break
            time.sleep(0.1)
        output, _ = session.communicate(timeout=120)
    finally:
        session.kill()
    assert session.returncode not in (0, None), output
    assert seen[-1] == 2, f"children seen while the session ran: {seen}\n{output}"
    assert seen == sorted(seen), seen  # they appeared one by one
    assert 1 in seen, seen

    client = store(tmp_path)
    (parent,) = sessions(client)
    assert parent.info.status == "KILLED"
    cases = cases_of(tmp_path / "results")
    finished = {c for c, r in cases.items() if r["status"] == "passed"}
    interrupted = {c for c, r in cases.items() if r["status"] == "interrupted"}
    assert finished == {"fgsm-cnniqa-live-msu5", "ifgsm-cnniqa-live-msu5"}, output
    assert interrupted == {MADC}, output
    logged = {run.data.tags["case_id"] for run in children(client, parent.info.run_id)}
    assert logged == finished
    assert parent.data.tags["interrupted_cases"] == MADC
    summary = summary_rows(tmp_path / "results" / "summary.csv")
    assert {c: r["status"] for c, r in summary.items()} == {
        "fgsm-cnniqa-live-msu5": "passed",
        "ifgsm-cnniqa-live-msu5": "passed",
        MADC: "interrupted",
    }
    per_image = {p.name for p in (tmp_path / "results" / "per_image").glob("*.csv")}
    assert per_image == {"fgsm_cnniqa-live_test.csv", "ifgsm_cnniqa-live_test.csv"}
    assert "stopped by SIGTERM after 2 finished case(s)" in output

    resumed = run_grid(tmp_path, weights, torch_home, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "--resume: 2 of 5 case(s) reused" in resumed.stdout
    cases = cases_of(tmp_path / "results")
    assert {c for c, r in cases.items() if r["resumed_from"]} == finished
    assert_same_summary(
        summary_rows(tmp_path / "results" / "summary.csv"), summary_rows(reference / "results" / "summary.csv")
    )
    last = sessions(client)[-1]
    assert last.info.status == "FINISHED"
    runs = {run.data.tags["case_id"]: run for run in children(client, last.info.run_id)}
    assert set(runs) == GRID_CASES
    # universal training's loss, step by step, as a metric history (a curve in the MLflow UI)
    curve = client.get_metric_history(runs["uap-cnniqa-live-msu5-on-msu5-amp0.2"].info.run_id, "train_loss")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == [1, 2, 3]
    assert all(math.isfinite(m.value) for m in curve)


def test_a_changed_hyperparameter_or_weight_file_is_never_resumed(tmp_path, weights, torch_home):
    small = ("--attack", "fgsm,ifgsm(eps=0.0392157)", "--max-images", "2", "--image-size", "64", "--no-mlflow")
    first = run_grid(tmp_path, weights, torch_home, *small)
    assert first.returncode == 0, first.stdout + first.stderr

    # ifgsm(eps=0.0392158) has the same case id (labels round to 4 digits), not the same fingerprint
    again = run_grid(tmp_path, weights, torch_home, "--resume", *small[:1], "fgsm,ifgsm(eps=0.0392158)", *small[2:])
    assert again.returncode == 0, again.stdout + again.stderr
    cases = cases_of(tmp_path / "results")
    assert {c: bool(r["resumed_from"]) for c, r in cases.items()} == {
        "fgsm-cnniqa-live-msu5": True,
        "ifgsm(eps=0.03922)-cnniqa-live-msu5": False,
    }
    assert cases["ifgsm(eps=0.03922)-cnniqa-live-msu5"]["params"]["eps"] == 0.0392158

    import torch

    changed = tmp_path / "changed-weights"
    shutil.copytree(weights / "original", changed)
    state = torch.load(changed / "CNNIQA-LIVE.pth", map_location="cpu")
    first_key = next(iter(state))
    state[first_key] = state[first_key] * 1.001  # a retrained model, as far as a checksum can tell
    torch.save(state, changed / "CNNIQA-LIVE.pth")
    command = _command(tmp_path, weights, "--resume", *small)
    command[command.index("--weights-dir") + 1] = str(changed)
    proc = subprocess.run(command, cwd=tmp_path, env=_env(torch_home), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not any(r["resumed_from"] for r in cases_of(tmp_path / "results").values())
    assert "--resume:" not in proc.stdout


def test_grid_shards_are_disjoint_and_merge_to_the_unsharded_session(tmp_path, weights, torch_home, reference, capsys):
    trained = run_grid(tmp_path / "train", weights, torch_home, "--train-only")
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "1 passed" in trained.stdout  # one perturbation for the two amplitudes; nothing evaluated
    assert "--train-only: 1 trained perturbation(s) in results/perturbations" in trained.stdout
    perturbations = tmp_path / "train" / "results" / "perturbations"
    files = {p.name: p.stat().st_mtime_ns for p in perturbations.iterdir()}
    assert files

    shard_dirs = []
    for k in (1, 2):
        workdir = tmp_path / f"shard{k}"
        shutil.copytree(perturbations, workdir / "results" / "perturbations")
        proc = run_grid(workdir, weights, torch_home, "--shard", f"{k}/2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shard_dirs.append(workdir / "results")
        copied = workdir / "results" / "perturbations"
        assert {p.name: p.stat().st_mtime_ns for p in copied.iterdir()} == {
            name: (copied / name).stat().st_mtime_ns for name in files
        }  # loaded, not trained again
    first, second = (set(cases_of(d)) for d in shard_dirs)
    assert not first & second
    assert first | second == GRID_CASES
    assert abs(len(first) - len(second)) <= 1
    # shards log as shards: `compare latest` and the leaderboard do not mistake one for a session
    assert sessions(store(tmp_path / "shard1")) == []
    assert len(sessions(store(tmp_path / "shard1"), kind="shard")) == 1

    out = tmp_path / "merged"
    uri = f"sqlite:///{tmp_path / 'merged.db'}"
    proc = run_cli(capsys, "merge", *map(str, shard_dirs), "--out", str(out), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_summary(summary_rows(out / "summary.csv"), summary_rows(reference / "results" / "summary.csv"))
    assert {p.name for p in (out / "per_image").glob("*.csv")} == {
        p.name for p in (reference / "results" / "per_image").glob("*.csv")
    }
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (merged,) = sessions(client)
    assert merged.info.status == "FINISHED"
    assert len(children(client, merged.info.run_id)) == len(GRID_CASES)

    # shards of different settings are not one grid
    import json

    record_path = next((shard_dirs[1] / "sessions").glob("*.json"))
    record = json.loads(record_path.read_text())
    record["settings"]["seed"] = 7
    record_path.write_text(json.dumps(record))
    proc = run_cli(capsys, "merge", *map(str, shard_dirs), "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0
    assert "different settings" in proc.stderr
    assert "seed: 0 in" in proc.stderr
    assert "7 in" in proc.stderr
    proc = run_cli(capsys, "merge", str(shard_dirs[0]), "--out", str(tmp_path / "bad"))
    assert proc.returncode != 0
    assert "grid shard(s) 2/2 missing" in proc.stderr


def test_image_shards_of_a_case_merge_to_the_scores_of_the_whole_case(tmp_path, weights, torch_home, reference, capsys):
    only = ("--attack", "fgsm,uap", "--no-mlflow")
    shard_dirs = []
    for k in (1, 2):
        workdir = tmp_path / f"images{k}"
        proc = run_grid(workdir, weights, torch_home, "--shard-images", f"{k}/2", *only)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shard_dirs.append(workdir / "results")
    halves = [cases_of(d)["fgsm-cnniqa-live-msu5"] for d in shard_dirs]
    assert [len(h["rows"]) for h in halves] == [3, 2]  # every second image from the first, from the second
    assert not {r["image_name"] for r in halves[0]["rows"]} & {r["image_name"] for r in halves[1]["rows"]}

    out = tmp_path / "merged"
    proc = run_cli(capsys, "merge", *map(str, shard_dirs), "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {
        case: row
        for case, row in summary_rows(reference / "results" / "summary.csv").items()
        if case.startswith(("fgsm-", "uap-"))
    }
    found = summary_rows(out / "summary.csv")
    assert set(found) == set(expected)
    for case in found:  # the joined rows are the whole case's: the same images in the same layout
        assert found[case]["n"] == "5"
    assert_same_summary(found, expected)


# A small, quick grid (NIQE needs 96 px) for the tracking server outage.
OUTAGE_GRID = ("--metric", "niqe", "--attack", "fgsm,ifgsm,mifgsm,amifgsm", "--dataset", "msu5", "--image-size", "96")
OUTAGE_CASES = {f"{attack}-niqe-msu5" for attack in ("fgsm", "ifgsm", "mifgsm", "amifgsm")}
#: how much longer than without MLflow the session may take: MLflow's import and the first case's logging,
#: the failed call's two quick retries, on a machine shared with other work (one call with MLflow's own
#: retries would take about four minutes)
OUTAGE_SECONDS = 30


def timed_session(workdir: Path, weights: Path, torch_home: Path, *args: str, **env: str) -> tuple[str, float]:
    """Run the outage grid in ``workdir``; its output and wall time (it must pass)."""
    workdir.mkdir(parents=True)
    command = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider", "-q", *OUTAGE_GRID]
    command += ["--weights-dir", str(weights), *args]
    env = {**_env(torch_home), "PYTHONPATH": str(Path(__file__).parent), **env}
    start = time.monotonic()
    proc = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr, seconds


def test_a_server_that_stops_after_the_first_case_costs_seconds_and_upload_completes_the_session_run(
    tmp_path, weights, torch_home, capsys
):
    from mlflow.tracking import MlflowClient

    from iqa_robustness.tracking import TrackingError, find_session

    _, without = timed_session(tmp_path / "no-mlflow", weights, torch_home, "--no-mlflow")
    server = MlflowServer(tmp_path / "server")
    try:
        server.start()
        stop = {"STOP_MLFLOW_SERVER_PGID": str(server.proc.pid), "STOP_MLFLOW_SERVER_PORT": str(server.port)}
        args = ("--mlflow-uri", server.uri, "-p", "stop_mlflow_server")
        output, stopped = timed_session(tmp_path / "stopped", weights, torch_home, *args, **stop)
        assert stopped < without + OUTAGE_SECONDS, (stopped, without)
        results = tmp_path / "stopped" / "results"
        assert set(summary_rows(results / "summary.csv")) == OUTAGE_CASES  # nothing lost
        assert output.count("MLflow logging failed") == 1
        assert "did not answer again at its end" in output
        assert "`iqa-robustness upload results`" in output

        client = MlflowClient(server.store_uri)  # the server's own store, read while it is down
        (parent,) = sessions(client)
        assert parent.info.status == "RUNNING"  # nobody could end it
        (first,) = children(client, parent.info.run_id)  # the case before the server went away
        assert first.data.tags["case_id"] in OUTAGE_CASES
        with pytest.raises(TrackingError, match="no 'latest' session"):
            find_session(client, DEFAULT_EXPERIMENT, "latest")  # the gate never compares with a partial session

        server.start()
        proc = run_cli(capsys, "upload", str(results))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"session run {parent.info.run_id} (the session's own run)" in proc.stdout
        client = MlflowClient(server.uri)
        run = client.get_run(parent.info.run_id)
        assert run.info.status == "FINISHED"
        assert run.info.start_time == parent.info.start_time
        assert {c.data.tags["case_id"] for c in children(client, run.info.run_id)} == OUTAGE_CASES
        assert find_session(client, DEFAULT_EXPERIMENT, "latest").info.run_id == run.info.run_id
    finally:
        server.stop()
