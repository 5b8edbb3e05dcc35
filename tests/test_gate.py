"""The regression gate: ``compare A B --fail-on-regression`` on real sessions, and its paired test.

The end-to-end test runs real ``pytest robustness_tests`` sessions on the benchmark's 5 test
images with a metric of one's own, ``detail`` (mean absolute horizontal gradient), next to
BRISQUE, logged to a real SQLite MLflow store. Between sessions the metric's code changes under
the same name: version A measures after an 8x8 box smoothing, version B at full resolution, where
I-FGSM's pixel-level noise raises it far more. The gate must name ``detail``'s case only; a
rerun of the same code and seed must pass; a larger eps is a new case, listed and not failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_robustness.cli.main import main as cli
from iqa_robustness.scores.regression import GateRule, compare_case

REPO_ROOT = Path(__file__).resolve().parents[1]

DETAIL = """
import torch.nn.functional as F
from iqa_robustness.metrics import Metric, MetricSpec


class Detail(Metric):
    spec = MetricSpec(name="detail", bounds=(0.0, 1.0), description="mean absolute horizontal gradient")

    def score(self, x):
        gray = x.mean(dim=1, keepdim=True)
        {smoothing}
        return (gray[..., 1:] - gray[..., :-1]).abs().mean(dim=(1, 2, 3))
"""
SMOOTHED = "gray = F.avg_pool2d(gray, 8)"
FULL_RESOLUTION = "pass"


def rows(clear: list[float], attacked: list[float]) -> list[dict]:
    return [
        {"image_name": f"img{i}.png", "clear": c, "attacked": a, "skip_reason": ""}
        for i, (c, a) in enumerate(zip(clear, attacked, strict=True))
    ]


CLEAR = [0.2, 0.35, 0.5, 0.65, 0.8]


# -- the paired test -------------------------------------------------------------------------------


def test_identical_sessions_have_zero_drop_and_pass() -> None:
    a = rows(CLEAR, [c + 0.05 for c in CLEAR])
    verdict = compare_case(a, a, lower_better=False)
    assert verdict.n == 5
    assert verdict.drop == 0.0
    assert not verdict.regressed


def test_an_attack_that_moves_every_score_further_is_a_regression() -> None:
    a = rows(CLEAR, [c + 0.01 for c in CLEAR])
    b = rows(CLEAR, [c + 0.2 + 0.01 * i for i, c in enumerate(CLEAR)])
    verdict = compare_case(a, b, lower_better=False)
    assert verdict.regressed
    assert verdict.drop > 1.0  # R: log10 of a ~20x larger move
    assert verdict.drop_low <= verdict.drop <= verdict.drop_high
    assert verdict.confidence > 0.95


def test_a_more_robust_session_is_not_a_regression() -> None:
    a = rows(CLEAR, [c + 0.2 + 0.01 * i for i, c in enumerate(CLEAR)])
    b = rows(CLEAR, [c + 0.01 for c in CLEAR])
    assert not compare_case(a, b, lower_better=False).regressed


def test_lower_is_better_metrics_are_oriented_before_the_test() -> None:
    # a lower-is-better metric fooled further goes *down* further
    a = rows(CLEAR, [c - 0.01 for c in CLEAR])
    b = rows(CLEAR, [c - 0.2 - 0.01 * i for i, c in enumerate(CLEAR)])
    gain = GateRule("norm_abs_gain")
    assert compare_case(a, b, lower_better=True, rule=gain).regressed
    # read as higher-is-better, B's scores fell: a negative gain, the attack made things worse, no regression
    assert not compare_case(a, b, lower_better=False, rule=gain).regressed
    # R measures how far the score moved either way: less robust both ways
    assert compare_case(a, b, lower_better=True).regressed


def test_noise_within_the_tolerance_passes_and_the_gain_can_be_gated_instead() -> None:
    a = rows(CLEAR, [c + 0.1 for c in CLEAR])
    b = rows(CLEAR, [c + 0.1 + (0.001 if i % 2 else -0.001) for i, c in enumerate(CLEAR)])
    assert not compare_case(a, b, lower_better=False).regressed
    assert not compare_case(a, b, lower_better=False, rule=GateRule("norm_abs_gain")).regressed
    worse = rows(CLEAR, [c + 0.3 + 0.001 * i for i, c in enumerate(CLEAR)])
    assert compare_case(a, worse, lower_better=False, rule=GateRule("norm_abs_gain")).regressed


def test_images_are_paired_by_name_and_one_pair_is_not_tested() -> None:
    a = rows(CLEAR, [c + 0.01 for c in CLEAR])
    other = {"image_name": "other.png", "clear": 0.5, "attacked": 0.9, "skip_reason": ""}
    b = [*rows(CLEAR, [c + 0.3 for c in CLEAR])[:1], other]
    verdict = compare_case(a, b, lower_better=False)
    assert verdict.n == 1
    assert not verdict.regressed
    assert "not tested" in verdict.note


def test_a_bad_rule_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="robustness_score"):
        GateRule("psnr")


# -- real sessions ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions(
    tmp_path_factory: pytest.TempPathFactory, msu_test_images: Path, torch_home: Path, pyiqa_weights: Path
) -> Path:
    """Sessions A (smoothed), A again, and B (full resolution, plus a larger eps) in one store."""
    work = tmp_path_factory.mktemp("gate")
    # the sessions run in a git checkout of their own, whose branch they record
    git = ["git", "-c", "user.name=gate", "-c", "user.email=gate@localhost", "-C", str(work)]
    subprocess.run([*git, "init", "-q", "-b", "feature/less-smoothing"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    module_dir = work / "own"
    module_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        PYTHONPATH=str(module_dir),
        PYTHONDONTWRITEBYTECODE="1",
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(torch_home),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
    )

    def session(name: str, smoothing: str, attacks: str) -> None:
        (module_dir / "own_detail.py").write_text(DETAIL.format(smoothing=smoothing))
        command = [
            sys.executable, "-m", "pytest", str(REPO_ROOT / "robustness_tests"), "-p", "no:cacheprovider", "-q",
            "--metric", "own_detail:Detail,brisque", "--attack", attacks, "--dataset", "msu5",
            "--image-size", "64", "--results-dir", str(work / name), "--mlflow-uri", f"sqlite:///{work / 'mlflow.db'}",
        ]  # fmt: skip
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    session("a", SMOOTHED, "ifgsm")
    session("a-again", SMOOTHED, "ifgsm")
    session("b", FULL_RESOLUTION, "ifgsm,ifgsm(eps=0.02)")
    return work


def gate(work: Path, a: str, b: str, capsys: pytest.CaptureFixture, *more: str) -> tuple[int, str]:
    code = cli(
        ["compare", a, b, "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--out", str(work / "gate"), *more]
    )
    return code, capsys.readouterr().out


@pytest.mark.usefixtures("msu_test_images")
def test_a_metric_made_less_robust_fails_the_gate_naming_its_cases_only(
    sessions: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out = gate(sessions, str(sessions / "a"), str(sessions / "b"), capsys, "--fail-on-regression")
    assert code == 1, out
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert len(regressed) == 1, out
    assert "detail" in regressed[0]
    assert "ifgsm" in regressed[0]
    assert "brisque" not in regressed[0]
    assert "1 case(s) REGRESSED" in out
    assert "detail x ifgsm x msu5: robustness_score" in out
    # the larger eps is a case of B only: listed, not failed
    assert any(line.startswith("B only") and "ifgsm(eps=0.02)" in line for line in out.splitlines()), out
    assert any(line.startswith("ok") and "brisque" in line for line in out.splitlines()), out
    assert list((sessions / "gate").glob("gate_*.txt"))


def test_two_sessions_of_the_same_code_and_seed_pass_the_gate(sessions: Path, capsys: pytest.CaptureFixture) -> None:
    # read back from the MLflow store this time: the two newest sessions before B are A and A again
    code, out = gate(sessions, str(sessions / "a"), str(sessions / "a-again"), capsys, "--fail-on-regression")
    assert code == 0, out
    assert "no regression: 2 case(s) tested" in out


def test_the_gate_reads_sessions_from_the_store_by_branch_and_metric(
    sessions: Path, capsys: pytest.CaptureFixture
) -> None:
    from iqa_robustness.tracking import describe_session, find_session, open_client

    client = open_client(f"sqlite:///{sessions / 'mlflow.db'}", create=False)
    latest = find_session(client, "iqa-robustness", "latest")
    branch = latest.data.tags.get("git_branch")
    assert branch == "feature/less-smoothing"
    assert find_session(client, "iqa-robustness", branch).info.run_id == latest.info.run_id
    assert find_session(client, "iqa-robustness", f"branch:{branch}", metric="brisque").info.run_id == (
        latest.info.run_id
    )
    code, out = gate(sessions, "previous", "latest", capsys, "--fail-on-regression", "--metric", "brisque")
    assert code == 0, out
    assert "detail" not in out
    assert describe_session(latest) in out
    assert any(line.startswith("ok") and "brisque" in line for line in out.splitlines()), out


def test_each_session_writes_its_report_and_logs_it_with_captioned_pairs_of_the_most_fooled_images(
    sessions: Path,
) -> None:
    from PIL import Image

    from iqa_robustness.scores.summary import load_cases
    from iqa_robustness.tracking import find_session, open_client

    assert (sessions / "b" / "report" / "index.html").is_file()
    client = open_client(f"sqlite:///{sessions / 'mlflow.db'}", create=False)
    latest = find_session(client, "iqa-robustness", "latest")
    assert "report/index.html" in [a.path for a in client.list_artifacts(latest.info.run_id, "report")]
    result = next(r for r in load_cases(next((sessions / "b" / "cases").iterdir())) if r.case_id == "ifgsm-detail-msu5")
    gains = sorted(result.rows, key=lambda r: r["attacked"] - r["clear"], reverse=True)
    most_fooled = {f"pair_{Path(r['image_name']).stem}.png" for r in gains[:3]}
    assert {n for n in result.artifacts if n.startswith("pair_")} == most_fooled
    case_run = client.search_runs(
        [latest.info.experiment_id],
        f"tags.mlflow.parentRunId = '{latest.info.run_id}' and tags.case_id = '{result.case_id}'",
    )[0]
    captioned = [a.path for a in client.list_artifacts(case_run.info.run_id, "pairs")]
    assert sorted(Path(p).name for p in captioned) == sorted(most_fooled)
    local = client.download_artifacts(case_run.info.run_id, captioned[0], str(sessions / "download"))
    raw = Image.open(result.artifacts[Path(captioned[0]).name])
    with Image.open(local) as image:  # clean | adversarial | perturbation, and the caption below
        assert image.width >= raw.width * 3 // 2
        assert image.height > raw.height * image.width // (raw.width * 3 // 2)
