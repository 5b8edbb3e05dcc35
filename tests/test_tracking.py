"""MLflow tracking: sessions logged to a real tracking server over HTTP, read back, compared, ranked.

One ``mlflow server`` (SQLite backend, served artefacts, a free port on 127.0.0.1) serves the
module. Two synthetic sessions of case results with scores computed from their per-image numbers
as docs/methodology.md defines them are logged to it; ``compare`` must report exactly the differences
put in, and ``leaderboard`` the order the numbers imply.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from mlflow_server import MlflowServer, env_without_mlflow, free_port
from PIL import Image
from scipy import stats

from iqa_robustness.cli.main import main as cli
from iqa_robustness.conventions import default_tracking_uri
from iqa_robustness.runner.sessions import SessionRecord
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.tracking import (
    FINISHED,
    KILLED,
    KIND_CASE,
    KIND_SESSION,
    PARAM_VALUE_LIMIT,
    SessionLogger,
    TrackingError,
    case_params,
    find_session,
    log_session,
    open_client,
    session_tags,
)

# Under ``pytest -n N --dist loadgroup`` one worker runs the whole module: one server, not N.
pytestmark = pytest.mark.xdist_group("mlflow-server")

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "tracking-test"
# Attack strength per metric: the stronger the change of the scores, the less robust the metric.
STRENGTH = {"sturdy": 0.02, "middling": 0.15, "fragile": 0.6}
IMAGE_ATTACKS = ("ifgsm",)
AMPLITUDES = (0.2, 0.8)
COMMIT_A = "a1b2c3d4" * 5
COMMIT_B = "b5c6d7e8" * 5
COMPARED = (
    "norm_abs_gain",
    "robustness_score",
    "wasserstein_score",
    "energy_distance_score",
    "abs_gain",
    "psnr",
    "seconds_per_image",
)


# -- synthetic sessions ----------------------------------------------------------------------------


def _group_scores(clear: np.ndarray, attacked: np.ndarray) -> dict[str, float]:
    """The scores of docs/methodology.md for higher-is-better metrics, with a 95% t interval for gains."""
    s_c = (clear - clear.min()) / (clear.max() - clear.min())
    s_a = (attacked - clear.min()) / (clear.max() - clear.min())
    gain = attacked - clear
    direction = np.sign(s_a.mean() - s_c.mean())
    scores = {
        "abs_gain": float(gain.mean()),
        "rel_gain": float((gain / (clear + 1)).mean()),
        "norm_abs_gain": float((s_a - s_c).mean()),
        "norm_rel_gain": float(((s_a - s_c) / (s_c + 1)).mean()),
        "robustness_score": float(np.mean(np.log10(np.maximum(1 - s_c, s_c) / (np.abs(s_c - s_a) + 1e-6)))),
        "wasserstein_score": float(stats.wasserstein_distance(s_c, s_a) * direction),
        "energy_distance_score": float(stats.energy_distance(s_c, s_a) * direction),
    }
    half = stats.t.ppf(0.975, len(gain) - 1) * gain.std(ddof=1) / math.sqrt(len(gain))
    scores["abs_gain_ci_low"], scores["abs_gain_ci_high"] = (
        scores["abs_gain"] - half,
        scores["abs_gain"] + half,
    )
    return scores


def _case(
    metric: str,
    attack: str,
    rng: np.random.Generator,
    boost: float,
    amplitude: float | None = None,
    weights_mode: str = "pretrained",
) -> CaseResult:
    n = 6
    clear = rng.uniform(0.2, 0.9, n)
    scale = STRENGTH[metric] * boost * (amplitude or 1.0)
    attacked = clear + scale * rng.uniform(0.5, 1.5, n)
    mse = rng.uniform(1e-4, 1e-3, n)
    rows = []
    for i in range(n):
        row = {
            "image_name": f"img{i}.png",
            "test_dataset": "sample",
            "clear": float(clear[i]),
            "attacked": float(attacked[i]),
            "rel_gain": float(attacked[i] / clear[i]),
            "psnr": float(10 * np.log10(1 / mse[i])),
            "ssim": float(1 - 20 * mse[i]),
            "mse": float(mse[i]),
        }
        if amplitude is not None:
            row.update(train_dataset="sample", amplitude=amplitude)
        rows.append(row)
    case_id = f"{attack}-{metric}-sample" + (f"-on-sample-amp{amplitude:g}" if amplitude is not None else "")
    params = {"eps": 10 / 255, "iters": 10, "seed": int(rng.integers(1 << 30)), "device": "cpu"}
    return CaseResult(
        case_id=case_id,
        metric=metric,
        attack=attack,
        dataset="sample",
        params=params,
        rows=rows,
        scores=_group_scores(clear, attacked),
        weights_mode=weights_mode,
        seconds_per_image=float(rng.uniform(0.01, 0.1)),
        peak_memory_mb=float(rng.uniform(100, 200)),
        amplitude=amplitude,
        train_dataset="sample" if amplitude is not None else None,
    )


def _session(seed: int, boost: float) -> list[CaseResult]:
    rng = np.random.default_rng(seed)
    results = []
    for metric in STRENGTH:
        results.extend(_case(metric, attack, rng, boost) for attack in IMAGE_ATTACKS)
        results.extend(_case(metric, "uap", rng, boost, amplitude=a) for a in AMPLITUDES)
    return results


def _artefacts(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    delta = np.random.default_rng(0).uniform(-0.1, 0.1, (16, 16, 3)).astype(np.float32)
    np.save(folder / "perturbation.npy", delta)
    Image.fromarray(((delta + 0.1) / 0.2 * 255).astype(np.uint8)).save(folder / "perturbation.png")
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(folder / "pair_img0.png")
    names = ("perturbation.npy", "perturbation.png", "pair_img0.png")
    return {**{n: str(folder / n) for n in names}, "gone.png": str(folder / "gone.png")}


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """``mlflow.search_runs`` reads the global tracking URI: set it for a moment, then put it back."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)  # also clears the variable MLflow exported
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow tracking server on a free local port, stopped (its process group) at teardown."""
    proc = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        proc.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def logged(server, tmp_path_factory: pytest.TempPathFactory):
    """Sessions A and B (B's attacks 1.5 times stronger) logged to the server, A first."""
    folder = tmp_path_factory.mktemp("sessions")
    a = _session(seed=1, boost=1.0)
    a[0].params["note"] = "x" * 2000  # far over MLflow's parameter length limit
    a[0].params.update({f"knob{i:03d}": i for i in range(120)})  # over one batch of parameters
    a[0].artifacts = _artefacts(folder / "artefacts")
    random_case = _case("middling", "fgsm", np.random.default_rng(7), 1.0, weights_mode="random")
    random_case.case_id, random_case.dataset = "fgsm-middling-random", "random-set"
    for row in random_case.rows:
        row["test_dataset"] = "random-set"
    a.append(random_case)
    b = _session(seed=2, boost=1.5)
    tags = session_tags(device="cpu", weights_mode="pretrained,random")
    id_a = log_session(
        a,
        uri=server.uri,
        experiment=EXPERIMENT,
        tags={**tags, "git_commit": COMMIT_A},
        results_dir=folder / "a",
    )
    tags_b = {**session_tags(device="cpu", weights_mode="pretrained"), "git_commit": COMMIT_B}
    id_b = log_session(b, uri=server.uri, experiment=EXPERIMENT, tags=tags_b, results_dir=folder / "b")
    client = MlflowClient(server.uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    return SimpleNamespace(
        uri=server.uri,
        a=a,
        b=b,
        id_a=id_a,
        id_b=id_b,
        client=client,
        experiment_id=experiment_id,
        folder=folder,
    )


def _children(logged, parent_id: str):
    with _tracking_uri(logged.uri):
        return mlflow.search_runs(
            experiment_ids=[logged.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
        )


def _case_run(logged, parent_id: str, case_id: str):
    runs = logged.client.search_runs(
        [logged.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.case_id = '{case_id}'"
    )
    assert len(runs) == 1
    return runs[0]


# -- where the store is, what a session records ------------------------------------------------------


def test_default_uri_is_a_local_sqlite_file_when_no_server_is_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve().as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_session_tags_fall_back_to_ci_variables_outside_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_PIPELINE_ID", "4711")
    monkeypatch.setenv("CI_JOB_ID", "815")
    monkeypatch.setenv("CI_COMMIT_SHA", COMMIT_B)
    monkeypatch.setenv("CI_COMMIT_REF_NAME", "feature/robust")
    tags = session_tags(device="cuda:0", weights_mode="random", root=tmp_path)
    assert tags["git_commit"] == COMMIT_B
    assert tags["git_branch"] == "feature/robust"
    assert (tags["ci_pipeline_id"], tags["ci_job_id"]) == ("4711", "815")
    assert (tags["device"], tags["weights_mode"], tags["benchmark_number"]) == ("cuda:0", "random", "false")
    assert tags["python_version"].count(".") == 2
    for library in ("torch", "piq", "torchmetrics"):
        assert tags[f"{library}_version"] == importlib.metadata.version(library)
    pyiqa = importlib.metadata.version("pyiqa") if importlib.util.find_spec("pyiqa") else "absent"
    assert tags["pyiqa_version"] == pyiqa
    assert tags["hostname"] == socket.gethostname()


def test_session_tags_record_the_checkout_commit(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the project is not a git checkout here")
    monkeypatch.delenv("CI_COMMIT_SHA", raising=False)
    tags = session_tags(device="cpu", weights_mode="pretrained", root=REPO_ROOT)
    assert tags["git_commit"] == head.stdout.strip()
    assert tags["git_dirty"] in ("true", "false")
    assert "benchmark_number" not in tags


def test_long_parameter_values_are_cut_and_odd_keys_cleaned():
    result = CaseResult("c", "m", "a", "d", params={"note": "y" * 5000, "weird key!": 1, "nested": {"k": [1, 2]}})
    params = case_params(result)
    assert len(params["note"]) == PARAM_VALUE_LIMIT
    assert params["note"].endswith("...")
    assert params["weird key_"] == "1"
    assert json.loads(params["nested"]) == {"k": [1, 2]}
    assert (params["amplitude"], params["seed"]) == ("None", "None")


# -- logging over HTTP -----------------------------------------------------------------------------


def test_a_session_is_one_parent_run_with_one_nested_run_per_case(logged):
    with _tracking_uri(logged.uri):
        sessions = mlflow.search_runs(
            experiment_ids=[logged.experiment_id], filter_string=f"tags.run_kind = '{KIND_SESSION}'"
        )
    assert set(sessions["run_id"]) == {logged.id_a, logged.id_b}
    children = _children(logged, logged.id_a)
    assert sorted(children["tags.case_id"]) == sorted(r.case_id for r in logged.a)
    assert set(children["tags.run_kind"]) == {KIND_CASE}
    parent = logged.client.get_run(logged.id_a)
    assert parent.data.tags["git_commit"] == COMMIT_A
    assert parent.data.metrics["n_cases"] == len(logged.a)
    assert parent.info.status == "FINISHED"


def test_the_session_run_carries_each_metrics_worst_case_mean_and_verdict(logged, tmp_path):
    parent = logged.client.get_run(logged.id_b)
    metrics, tags = parent.data.metrics, parent.data.tags
    for metric in STRENGTH:
        cases = [r for r in logged.b if r.metric == metric]
        worst = min(r.scores["robustness_score"] for r in cases)
        largest = max(r.scores["norm_abs_gain"] for r in cases)
        assert metrics[f"worst_robustness_score/{metric}/sample"] == pytest.approx(worst, rel=1e-9)
        assert metrics[f"max_norm_abs_gain/{metric}/sample"] == pytest.approx(largest, rel=1e-9)
        assert f"mean_robustness_score/{metric}" in metrics
        assert tags[f"verdict/{metric}"].startswith(("fooled", "robust", "evaluation unreliable"))
    assert tags["verdict/fragile"].startswith("fooled")
    logged.client.download_artifacts(logged.id_b, "verdict.json", str(tmp_path))
    saved = json.loads((tmp_path / "verdict.json").read_text())
    assert [m["metric"] for m in saved["metrics"]] == list(STRENGTH)


def test_case_runs_carry_params_metrics_and_tags(logged):
    result = next(r for r in logged.a if r.amplitude == 0.8 and r.metric == "fragile")
    run = _case_run(logged, logged.id_a, result.case_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert (params["metric"], params["attack"], params["dataset"]) == ("fragile", "uap", "sample")
    assert (params["amplitude"], params["train_dataset"]) == ("0.8", "sample")
    assert params["seed"] == str(result.params["seed"])
    assert float(params["eps"]) == pytest.approx(10 / 255)
    for name, value in result.scores.items():
        assert metrics[name] == pytest.approx(value, rel=1e-12), name
    assert metrics["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.rows]))
    assert metrics["mse"] == pytest.approx(np.mean([r["mse"] for r in result.rows]))
    assert metrics["seconds_per_image"] == pytest.approx(result.seconds_per_image)
    assert metrics["n_images"] == 6
    assert "abs_gain_ci_low" in metrics
    assert (tags["status"], tags["weights_mode"], tags["case_id"]) == ("passed", "pretrained", result.case_id)
    assert "benchmark_number" not in tags


def test_random_weights_cases_are_tagged_as_not_benchmark_numbers(logged):
    run = _case_run(logged, logged.id_a, "fgsm-middling-random")
    assert run.data.tags["benchmark_number"] == "false"
    assert run.data.tags["weights_mode"] == "random"
    assert logged.client.get_run(logged.id_a).data.tags["benchmark_number"] == "false"
    assert "benchmark_number" not in logged.client.get_run(logged.id_b).data.tags


def test_long_parameter_values_reach_the_server_cut_and_large_batches_arrive_whole(logged):
    run = _case_run(logged, logged.id_a, logged.a[0].case_id)
    assert run.data.params["note"] == "x" * (PARAM_VALUE_LIMIT - 3) + "..."
    assert [run.data.params[f"knob{i:03d}"] for i in range(120)] == [str(i) for i in range(120)]


def test_case_artefacts_are_uploaded_with_the_msu_csv_and_a_plot(logged, tmp_path):
    result = logged.a[0]
    run_id = _case_run(logged, logged.id_a, result.case_id).info.run_id
    top = {f.path for f in logged.client.list_artifacts(run_id)}
    assert f"{result.case_id}.csv" in top
    assert {f.path for f in logged.client.list_artifacts(run_id, "plots")} == {"plots/clear_vs_attacked.png"}
    files = {f.path for f in logged.client.list_artifacts(run_id, "files")}
    assert files == {
        "files/perturbation.npy",
        "files/perturbation.png",
        "files/pair_img0.png",
    }  # not the missing one
    local = Path(logged.client.download_artifacts(run_id, f"{result.case_id}.csv", str(tmp_path)))
    with local.open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == [
        "image_name",
        "test_dataset",
        "clear",
        "attacked",
        "rel_gain",
        "psnr",
        "ssim",
        "mse",
    ]
    assert [float(r["attacked"]) for r in table] == pytest.approx([r["attacked"] for r in result.rows])
    npy = Path(logged.client.download_artifacts(run_id, "files/perturbation.npy", str(tmp_path)))
    assert np.load(npy).shape == (16, 16, 3)


def test_universal_cases_use_the_universal_msu_layout(logged, tmp_path):
    result = next(r for r in logged.a if r.attack == "uap")
    run_id = _case_run(logged, logged.id_a, result.case_id).info.run_id
    local = Path(logged.client.download_artifacts(run_id, f"{result.case_id}.csv", str(tmp_path)))
    header = local.read_text().splitlines()[0].split(",")
    assert {"train_dataset", "amplitude"} <= set(header)


def test_the_parent_run_keeps_the_session_summary_and_verdicts(logged, tmp_path):
    assert [f.path for f in logged.client.list_artifacts(logged.id_a)] == ["summary.csv", "verdict.json"]
    local = Path(logged.client.download_artifacts(logged.id_a, "summary.csv", str(tmp_path)))
    with local.open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case_id"] for r in rows) == sorted(r.case_id for r in logged.a)


# -- compare and leaderboard -----------------------------------------------------------------------


def _expected(result: CaseResult, score: str) -> float:
    if score == "psnr":
        return float(np.mean([r["psnr"] for r in result.rows]))
    if score == "seconds_per_image":
        return result.seconds_per_image
    return result.scores[score]


def test_compare_reports_exactly_the_differences_between_two_sessions(logged, tmp_path, capsys):
    status = cli(
        ["compare", COMMIT_A[:7], "latest", "--tracking-uri", logged.uri, "--experiment", EXPERIMENT,
         "--out", str(tmp_path), "--format", "json"]
    )  # fmt: skip
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {(r["metric"], r["attack"], r["amplitude"]): r for r in rows if r["present"] == "both"}
    assert len(by_key) == len(logged.b)
    for b in logged.b:
        a = next(x for x in logged.a if x.case_id == b.case_id)
        row = by_key[(b.metric, b.attack, "" if b.amplitude is None else str(b.amplitude))]
        for score in COMPARED:
            assert row[f"{score}_a"] == pytest.approx(_expected(a, score), rel=1e-12)
            assert row[f"{score}_b"] == pytest.approx(_expected(b, score), rel=1e-12)
            assert row[f"{score}_delta"] == pytest.approx(_expected(b, score) - _expected(a, score), abs=1e-12)
    only_a = [r for r in rows if r["present"] == "A only"]
    assert [r["dataset"] for r in only_a] == ["random-set"]
    assert only_a[0]["robustness_score_delta"] is None
    saved = list(tmp_path.glob("compare_*.csv"))
    assert [p.name for p in saved] == [f"compare_{logged.id_a[:8]}_{logged.id_b[:8]}.csv"]


def test_compare_table_names_both_sessions_and_signs_the_deltas(logged, tmp_path, capsys):
    status = cli(
        ["compare", "previous", logged.id_b, "--tracking-uri", logged.uri, "--experiment", EXPERIMENT,
         "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert f"A = {logged.id_a}" in out
    assert f"B = {logged.id_b}" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("fragile") and " uap " in ln and "norm_abs_gain" in ln)
    assert line.split()[-1].startswith("+")  # B's attacks are stronger: the gain grew


def test_compare_of_an_unknown_reference_says_what_it_accepts(logged, tmp_path, capsys):
    status = cli(["compare", "nonsense!", "latest", "--tracking-uri", logged.uri, "--experiment", EXPERIMENT])
    assert status == 2
    assert "neither a run id, a git commit" in capsys.readouterr().err


def test_leaderboard_ranks_metrics_by_their_worst_case_with_the_mean_over_attacks_beside_it(logged, tmp_path, capsys):
    status = cli(
        ["leaderboard", "--run", logged.id_b, "--tracking-uri", logged.uri, "--experiment", EXPERIMENT,
         "--out", str(tmp_path), "--format", "json"]
    )  # fmt: skip
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    mean, worst = {}, {}
    for metric in STRENGTH:
        per_attack = {}
        for r in logged.b:
            if r.metric == metric:
                per_attack.setdefault(r.attack, []).append(r.scores["robustness_score"])
        mean[metric] = np.mean([np.mean(v) for v in per_attack.values()])
        worst[metric] = min((r for r in logged.b if r.metric == metric), key=lambda r: r.scores["robustness_score"])
    assert [r["metric"] for r in rows] == ["sturdy", "middling", "fragile"]
    assert [r["metric"] for r in rows] == sorted(worst, key=lambda m: worst[m].scores["robustness_score"], reverse=True)
    for r in rows:
        case = worst[r["metric"]]
        assert r["worst_robustness_score"] == pytest.approx(case.scores["robustness_score"], rel=1e-12)
        label = case.attack + (f" @{case.amplitude:g} on sample" if case.amplitude is not None else "")
        assert r["worst_robustness_attack"] == f"{label} (sample)"
        assert r["robustness_score"] == pytest.approx(mean[r["metric"]], rel=1e-12)
        assert r["n_attacks"] == len(IMAGE_ATTACKS) + 1
    png = tmp_path / "leaderboard.png"
    assert png.is_file()
    assert Image.open(png).size[0] > 100
    with (tmp_path / "leaderboard.csv").open() as fh:
        assert [r["metric"] for r in csv.DictReader(fh)] == ["sturdy", "middling", "fragile"]


def test_leaderboard_warns_when_a_session_used_random_weights(logged, tmp_path, capsys):
    status = cli(
        ["leaderboard", "--run", COMMIT_A[:10], "--tracking-uri", logged.uri, "--experiment", EXPERIMENT,
         "--out", str(tmp_path)]
    )  # fmt: skip
    assert status == 0
    assert "not benchmark numbers" in capsys.readouterr().out


# -- failures and the controller-only design -------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_server_that_is_down_gives_a_clear_error_and_keeps_the_results(server, tmp_path, caplog, capsys):
    results_dir = tmp_path / "results"
    results = _session(seed=3, boost=1.0)[:3]
    for r in results:
        r.save_json(results_dir / "cases" / "s1" / f"{r.case_id}.json")
    (results_dir / "summary.csv").write_text("case_id\n")
    before = _snapshot(results_dir)
    down = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError) as info:
        log_session(results, uri=down, experiment=EXPERIMENT, tags={}, results_dir=results_dir)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "cannot reach the MLflow tracking server" in message
    assert "mlflow server" in message
    assert str(results_dir) in message
    assert "iqa-robustness upload" in message
    assert [rec.levelname for rec in caplog.records if rec.name.startswith("iqa_robustness")] == ["WARNING"]
    assert _snapshot(results_dir) == before
    # what the message says to do works: log the kept results once a server answers
    assert cli(["upload", str(results_dir), "--tracking-uri", server.uri, "--experiment", "uploaded"]) == 0
    run_id = capsys.readouterr().out.split("session run ")[1].split()[0]
    client = MlflowClient(server.uri)
    experiment_id = client.get_experiment_by_name("uploaded").experiment_id
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert sorted(c.data.tags["case_id"] for c in children) == sorted(r.case_id for r in results)


def test_a_server_that_fails_mid_session_is_called_no_more_and_gets_what_it_missed_when_back(tmp_path, caplog):
    server = MlflowServer(tmp_path / "server")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    cases = _session(seed=4, boost=1.0)[:4]
    logger = SessionLogger(server.uri, EXPERIMENT, {"git_commit": COMMIT_A}, tmp_path / "results")
    try:
        parent = logger.start()
        logger.log_case(cases[0])
        server.stop()
        start = time.monotonic()
        with pytest.raises(TrackingError, match="iqa-robustness upload"):
            logger.log_case(cases[1])
        failed_in = time.monotonic() - start
        start = time.monotonic()
        assert logger.log_case(cases[2]) is None  # offline: no call at all
        assert time.monotonic() - start < 0.5
        assert failed_in < 15, failed_in  # MLflow's own retries wait about four minutes
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]  # not one per retry either
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert server.uri in warnings[0].getMessage()

        server.start()  # back before the session ends: its one attempt logs what the server missed
        assert logger.finish(cases, FINISHED) == parent
        assert "Connection refused" in logger.missed
        client = MlflowClient(server.uri)
        run = client.get_run(parent)
        children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    finally:
        server.stop()
    assert (run.info.status, run.data.metrics["n_cases"]) == ("FINISHED", len(cases))
    assert sorted(c.data.tags["case_id"] for c in children) == sorted(r.case_id for r in cases)
    assert {c.info.status for c in children} == {"FINISHED"}


def test_a_session_whose_store_stays_away_makes_one_short_attempt_at_its_end(tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    logger = SessionLogger(down, EXPERIMENT, {}, tmp_path / "results")
    with pytest.raises(TrackingError):
        logger.start()
    assert logger.log_case(_session(seed=5, boost=1.0)[0]) is None
    start = time.monotonic()
    with pytest.raises(TrackingError) as info:
        logger.finish(_session(seed=5, boost=1.0)[:2])
    assert time.monotonic() - start < 10
    assert "did not answer again at its end" in str(info.value)
    assert f"iqa-robustness upload {tmp_path / 'results'}" in str(info.value)


def _record_session(results_dir: Path, cases: list[CaseResult], run_id: str, uri: str, status: str) -> SessionRecord:
    """A results folder as a session leaves it: its cases and its record naming its MLflow run."""
    record = SessionRecord("s0123456789a", tags={"git_commit": COMMIT_B}, mlflow_run_id=run_id, tracking_uri=uri)
    for r in cases:
        r.save_json(record.cases_dir(results_dir) / f"{r.case_id}.json")
    record.end(results_dir, status)
    return record


def test_upload_completes_the_sessions_own_run_with_its_missing_cases_status_and_end_time(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = _session(seed=6, boost=1.0)[:4]
    # what a session leaves when its store goes away after its first case, in the middle of the second
    logger = SessionLogger(uri, EXPERIMENT, {"git_commit": COMMIT_B}, tmp_path / "results")
    run_id = logger.start()
    logger.log_case(cases[0])
    client = MlflowClient(uri)
    cut_short = client.create_run(
        logger.experiment_id, tags={"mlflow.parentRunId": run_id, "case_id": cases[1].case_id, "run_kind": "case"}
    ).info.run_id
    time.sleep(1.1)  # the record's end time (whole seconds) is after the run's start
    record = _record_session(tmp_path / "results", cases, run_id, uri, "failed")
    with pytest.raises(TrackingError, match="no 'latest' session"):
        find_session(client, EXPERIMENT, "latest")  # partial: no `latest` names it

    assert cli(["upload", str(tmp_path / "results")]) == 0  # no --tracking-uri: the session's own store
    out = capsys.readouterr().out
    assert f"session run {run_id} (the session's own run)" in out
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"  # as the session ended, though every case passed
    assert run.info.end_time == int(_dt.datetime.fromisoformat(record.finished).timestamp() * 1000)
    assert run.data.metrics["n_cases"] == len(cases)
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert sorted(c.data.tags["case_id"] for c in children) == sorted(r.case_id for r in cases)
    assert {c.info.status for c in children} == {"FINISHED"}
    assert client.get_run(cut_short).info.lifecycle_stage == "deleted"
    assert find_session(client, EXPERIMENT, "latest").info.run_id == run_id

    assert cli(["upload", str(tmp_path / "results")]) == 0  # whole now: nothing is logged twice
    again = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(again) == len(cases)


def test_upload_makes_a_new_session_run_when_the_store_has_not_the_sessions_own(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    cases = _session(seed=7, boost=1.0)[:2]
    _record_session(tmp_path / "results", cases, "f" * 32, "http://gone.example:5000", "finished")
    assert cli(["upload", str(tmp_path / "results"), "--tracking-uri", uri, "--experiment", EXPERIMENT]) == 0
    assert "(a new session run)" in capsys.readouterr().out
    client = MlflowClient(uri)
    (session,) = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.run_kind = 'session'"
    )
    assert session.data.tags["git_commit"] == COMMIT_B  # the session's own tags, from its record
    assert session.info.status == "FINISHED"


def test_latest_previous_a_commit_and_a_branch_name_only_whole_sessions(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cases = _session(seed=8, boost=1.0)[:2]
    main_a, main_b = {"git_commit": COMMIT_A, "git_branch": "main"}, {"git_commit": COMMIT_B, "git_branch": "main"}
    whole = log_session(cases, uri=uri, experiment=EXPERIMENT, tags=main_a)
    # newer sessions of the same branch that are partial: still running, stopped, cut short
    running = SessionLogger(uri, EXPERIMENT, main_b)
    running.start()
    running.log_case(cases[0])
    log_session(cases[:1], uri=uri, experiment=EXPERIMENT, tags=main_b, status=KILLED)
    broken = SessionLogger(uri, EXPERIMENT, main_b)
    broken.start()
    broken.close()
    client = MlflowClient(uri)
    assert client.get_run(broken.run_id).info.status == "FAILED"
    for ref in ("latest", "main", "branch:main", COMMIT_A[:8]):
        assert find_session(client, EXPERIMENT, ref).info.run_id == whole, ref
    with pytest.raises(TrackingError, match="1 whole session"):
        find_session(client, EXPERIMENT, "previous")
    with pytest.raises(TrackingError, match="names no session"):
        find_session(client, EXPERIMENT, COMMIT_B[:8])
    assert find_session(client, EXPERIMENT, running.run_id).info.run_id == running.run_id  # a run id names any
    assert "is partial (status RUNNING" in caplog.text


LOG_AT_ONCE = """
import os, sys, time
from pathlib import Path
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.tracking import log_session, session_tags
store, cases, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
results = [CaseResult.load_json(p) for p in sorted(cases.glob("*.json"))]
tags = session_tags(device="cpu", weights_mode="pretrained")
(go.parent / f"ready-{os.getpid()}").touch()
while not go.exists():  # every process has imported MLflow: they open the store within milliseconds
    time.sleep(0.002)
print(log_session(results, uri=f"sqlite:///{store}", experiment="at-once", tags=tags))
"""


def _sessions_at_once(tmp_path: Path, store: Path, count: int) -> list[str]:
    """``count`` processes log a session each to ``store``, released at the same moment; their run ids."""
    go = tmp_path / "gate" / "go"
    go.parent.mkdir()
    procs = []
    for i in range(count):
        cases = tmp_path / f"cases{i}"
        for r in _session(seed=20 + i, boost=1.0)[:2]:
            r.save_json(cases / f"{r.case_id}.json")
        command = [sys.executable, "-c", LOG_AT_ONCE, str(store), str(cases), str(go)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        procs.append(subprocess.Popen(command, cwd=tmp_path, env=env_without_mlflow(), **pipes))
    deadline = time.monotonic() + 300
    while len(list(go.parent.glob("ready-*"))) < count and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        run_ids.append(out.strip().splitlines()[-1])
    return run_ids


def _assert_logged_whole(store: Path, run_ids: list[str]) -> None:
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("at-once")
    sessions = client.search_runs([experiment.experiment_id], "tags.run_kind = 'session'")
    assert sorted(s.info.run_id for s in sessions) == sorted(run_ids)
    assert {s.info.status for s in sessions} == {"FINISHED"}
    for run_id in run_ids:
        children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert len(children) == 2


def test_three_sessions_log_to_an_existing_sqlite_store_at_once(tmp_path):
    store = tmp_path / "mlflow.db"
    open_client(f"sqlite:///{store}")  # the store exists, with its tables
    _assert_logged_whole(store, _sessions_at_once(tmp_path, store, 3))


def test_two_sessions_that_create_a_new_sqlite_store_at_once_both_log(tmp_path):
    store = tmp_path / "mlflow.db"
    _assert_logged_whole(store, _sessions_at_once(tmp_path, store, 2))
    assert (tmp_path / "mlflow.db.lock").exists()  # creation was serialised by the lock beside the store


def test_readers_do_not_create_a_store_that_is_not_there(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    assert cli(["leaderboard", "--tracking-uri", uri]) == 2
    assert "no MLflow store" in capsys.readouterr().err
    assert not (tmp_path / "absent.db").exists()


LOG_ONE_SESSION = """
import sys
from pathlib import Path
from iqa_robustness.scores.results import CaseResult
from iqa_robustness.conventions import default_tracking_uri
from iqa_robustness.tracking import log_session, session_tags
root = Path(sys.argv[1])
results = [CaseResult.load_json(p) for p in sorted(Path(sys.argv[2]).glob("*.json"))]
print(log_session(results, uri=default_tracking_uri(root), experiment="sequential",
                  tags=session_tags(device="cpu", weights_mode="pretrained")))
"""


def test_two_processes_log_to_a_fresh_sqlite_store_one_after_the_other(tmp_path):
    store = tmp_path / "project"
    store.mkdir()
    run_ids = []
    for i in range(2):
        cases = tmp_path / f"cases{i}"
        for r in _session(seed=10 + i, boost=1.0)[:2]:
            r.save_json(cases / f"{r.case_id}.json")
        done = subprocess.run(
            [sys.executable, "-c", LOG_ONE_SESSION, str(store), str(cases)],
            cwd=tmp_path, env=env_without_mlflow(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        run_ids.append(done.stdout.strip().splitlines()[-1])
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sequential")
    assert experiment.artifact_location == (store / "mlartifacts" / "sequential").as_uri()
    sessions = client.search_runs([experiment.experiment_id], "tags.run_kind = 'session'")
    assert {s.info.run_id for s in sessions} == set(run_ids)
    for run_id in run_ids:
        children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")
        assert len(children) == 2
    assert len(list((store / "mlartifacts" / "sequential").rglob("summary.csv"))) == 2
    assert not (tmp_path / "mlruns").exists()
