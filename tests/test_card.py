"""Robustness cards (docs/card.md): the JSON against its published schema, the Markdown, the badge, the
leaderboard from cards, and compare's card-level changes.

Two real sessions run once for the module, in a fresh pytest process as a user runs them, logged to one
MLflow store: A runs CNNIQA-LIVE (its released weights), NIQE and a metric of the test's own with a
rounding step in front, FGSM and I-FGSM at 4/255 on the benchmark's five test images at 96 px, and a
certify case on CNNIQA-LIVE. I-FGSM fools CNNIQA-LIVE, NIQE holds at 4/255, and the rounding step
leaves no gradient (evaluation unreliable): one verdict of each kind. B runs FGSM on CNNIQA-LIVE
alone, which it holds against: its verdict changes from A's.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import textwrap
import types
from importlib import metadata
from pathlib import Path
from xml.etree import ElementTree

import jsonschema
import pytest
import torch
from test_plugin import run_suite

from iqa_robustness import __version__
from iqa_robustness.cli.main import main
from iqa_robustness.metrics import create_metric, metric_identity
from iqa_robustness.report.card import CardError, read_card
from iqa_robustness.report.card_markdown import badge_svg
from iqa_robustness.runner.config import device_name

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = REPO_ROOT / "iqa_robustness" / "schemas" / "robustness-card-1.json"
SVG = "{http://www.w3.org/2000/svg}"

OWN_METRIC = """
import torch
from iqa_robustness.metrics import Metric, MetricSpec


class Rounded(Metric):
    spec = MetricSpec(name="rounded-sharpness", bounds=(0.0, 1.0), description="sharpness of the 8-bit image")

    def score(self, x):
        gray = (torch.round(x * 255) / 255).mean(dim=1)
        return (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))
"""


@pytest.fixture(scope="module")
def sessions(tmp_path_factory, torch_home, shared_dir, msu_test_images, pyiqa_weights) -> types.SimpleNamespace:
    weights = shared_dir / "weights"
    if not (weights / "original" / "CNNIQA-LIVE.pth").is_file():
        pytest.skip(f"CNNIQA-LIVE.pth not in {weights / 'original'}: the released weights are needed")
    folder = tmp_path_factory.mktemp("cards")
    (folder / "own_card_metrics.py").write_text(textwrap.dedent(OWN_METRIC))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    common = ("--eps", "4/255", "--dataset", str(msu_test_images), "--image-size", "96",
              "--weights-dir", str(weights), "--mlflow-uri", uri, "-q")  # fmt: skip
    runs = {
        "a": ("--metric", "cnniqa-live,niqe,own_card_metrics:Rounded", "--attack", "fgsm,ifgsm,certify(n=30)",
              "-k", "not (certify and (niqe or rounded))"),
        "b": ("--metric", "cnniqa-live", "--attack", "fgsm"),
    }  # fmt: skip
    for name, args in runs.items():
        proc = run_suite(folder, torch_home, *args, *common, "--results-dir", str(folder / name), timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    (record,) = (folder / "a" / "sessions").glob("*.json")
    return types.SimpleNamespace(
        folder=folder, a=folder / "a", b=folder / "b", uri=uri, run_a=json.loads(record.read_text())["mlflow_run_id"]
    )


def write_cards(session: Path, out: Path, capsys, *more: str) -> dict[str, dict]:
    """``iqa-robustness card SESSION --out OUT``: the cards it wrote, by metric."""
    assert main(["card", str(session), "--out", str(out), *more]) == 0
    printed = capsys.readouterr().out
    cards = {p.name.removesuffix(".card.json"): json.loads(p.read_text()) for p in out.glob("*.card.json")}
    assert all(f"{out / name}.card.json (valid robustness-card-1)" in printed for name in cards), printed
    return cards


@pytest.fixture(scope="module")
def cards_a(sessions) -> Path:
    out = sessions.folder / "cards-a"
    assert main(["card", str(sessions.a), "--out", str(out)]) == 0
    return out


def test_every_card_validates_against_the_published_schema_and_a_broken_one_does_not(cards_a):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    files = sorted(cards_a.glob("*.card.json"))
    assert [p.name for p in files] == ["cnniqa-live.card.json", "niqe.card.json", "rounded-sharpness.card.json"]
    for path in files:
        jsonschema.validate(json.loads(path.read_text()), schema)  # the schema file as a user reads it

    card = json.loads(files[0].read_text())
    broken = [
        {**card, "metric": {k: v for k, v in card["metric"].items() if k != "weights_checksum"}},
        {**card, "verdict": {**card["verdict"], "verdict": "trustworthy"}},
        {**card, "badge": {**card["badge"], "message": "robust at every budget"}},
        {**card, "datasets": [{**card["datasets"][0], "images": -1}]},
    ]
    for bad in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    files[0].with_name("broken.card.json").write_text(json.dumps(broken[1]))
    with pytest.raises(CardError, match=r"broken.card.json is not a valid robustness-card-1: at verdict/verdict"):
        read_card(files[0].with_name("broken.card.json"))
    files[0].with_name("broken.card.json").write_text(json.dumps({**card, "schema_version": 2}))
    with pytest.raises(CardError, match="schema_version 2; this version of the suite reads version 1"):
        read_card(files[0].with_name("broken.card.json"))
    files[0].with_name("broken.card.json").unlink()


def test_a_card_names_the_metric_its_parameters_checksum_the_data_the_seeds_and_the_hardware(
    sessions, cards_a, shared_dir
):
    cnniqa, niqe, own = (read_card(cards_a / f"{m}.card.json") for m in ("cnniqa-live", "niqe", "rounded-sharpness"))

    metric = cnniqa["metric"]
    assert (metric["source"], metric["implementation"]) == ("own", "iqa_robustness.metrics.cnniqa_live")
    assert metric["version"] == __version__
    assert metric["weight_files"] == ["CNNIQA-LIVE.pth"]
    built = create_metric("cnniqa-live", weights=shared_dir / "weights")  # the checksum the fingerprints hold
    assert metric["weights_checksum"]["value"] == metric_identity(built)
    assert (niqe["metric"]["library"], niqe["metric"]["version"]) == ("pyiqa", metadata.version("pyiqa"))
    assert own["metric"]["implementation"] == "own_card_metrics:Rounded"
    assert own["metric"]["version"] is None
    (data,) = cnniqa["datasets"]
    assert (data["name"], data["images"], data["skipped"], data["image_size"]) == ("test_images", 5, 0, 96)
    assert data["mos"] is None  # the five test images have no subjective scores
    cases = {p.stem: json.loads(p.read_text()) for p in sessions.a.glob("cases/*/*cnniqa-live*.json")}
    assert cnniqa["seeds"] == {"base": 0, "cases": {k: c["params"]["seed"] for k, c in cases.items()}}
    assert cnniqa["hardware"]["device"] == "cpu"
    assert cnniqa["hardware"]["device_name"] == device_name(torch.device("cpu"))
    assert cnniqa["hardware"]["torch_version"] == metadata.version("torch")
    assert cnniqa["suite"]["version"] == __version__
    assert {a["label"] for a in cnniqa["attacks"]} == {"fgsm-eps4", "ifgsm-eps4", "certify(n=30)"}


def test_the_markdown_and_the_badge_say_fooled_robust_and_unreliable(cards_a):
    cards = {m: read_card(cards_a / f"{m}.card.json") for m in ("cnniqa-live", "niqe", "rounded-sharpness")}
    (fooled,) = cards["cnniqa-live"]["verdict"]["worst_case"]
    expected = {
        "cnniqa-live": ("fooled", f"fooled at 4/255: norm. gain {fooled['max_norm_abs_gain']:.2g}"),
        "niqe": ("robust", "robust at 4/255"),
        "rounded-sharpness": ("unreliable", "evaluation unreliable"),
    }
    for metric, (state, message) in expected.items():
        card = cards[metric]
        assert card["verdict"]["verdict"] == state
        assert card["badge"]["message"] == message
        svg = ElementTree.parse(cards_a / f"{metric}.badge.svg").getroot()
        assert svg.tag == f"{SVG}svg"
        assert svg.find(f"{SVG}title").text == f"{metric}: {message}"
        texts = [t.text for t in svg.iter(f"{SVG}text")]
        assert texts == [metric, metric, message, message]  # each text and its shadow
        label, value = svg.find(f"{SVG}g").findall(f"{SVG}rect")[:2]
        assert int(svg.get("width")) == int(label.get("width")) + int(value.get("width"))
        page = (cards_a / f"{metric}.card.md").read_text()
        assert f"![{metric}: {message}]({metric}.badge.svg)" in page
        assert f"**Verdict:** {card['verdict']['text']}" in page
    assert expected["cnniqa-live"][1].startswith("fooled at 4/255: norm. gain ")
    own = (cards_a / "rounded-sharpness.card.md").read_text()
    assert "- **no-gradient**: no gradient: 100% of the loss gradient is zero or not finite" in own
    assert "evidence: `dead_gradient_share=1" in own
    cnniqa = (cards_a / "cnniqa-live.card.md").read_text()
    assert f"`{cards['cnniqa-live']['metric']['weights_checksum']['value']}`" in cnniqa
    assert "| test_images | 4/255 | fooled |" in cnniqa
    assert "Not certified in this session" in (cards_a / "niqe.card.md").read_text()


def test_the_certified_slot_holds_the_certify_case_beside_what_the_attacks_achieved_within_its_radius(sessions):
    verdicts = {m["metric"]: m for m in json.loads((sessions.a / "verdict.json").read_text())["metrics"]}
    with (sessions.a / "summary.csv").open() as fh:
        (certify,) = (r for r in csv.DictReader(fh) if r["attack"] == "certify(n=30)")

    certified = verdicts["cnniqa-live"]["certified"]
    (entry,) = certified["certificates"]
    assert entry["bound"] == pytest.approx(float(certify["certified_change_scaled"]))
    assert entry["achieved"] == pytest.approx(float(certify["achieved_change_scaled"]))
    assert [entry[k] for k in ("eps", "sigma", "n", "alpha", "unit")] == [0.05, 0.12, 30, 0.001, "min-max"]
    assert entry["breaches"] == 0
    assert entry["achieved"] < entry["bound"]
    assert entry["achieved_ratio_max"] < 1  # no image's attacks came near its own certificate
    assert verdicts["cnniqa-live"]["worst_case"][0]["certified"] == entry
    assert verdicts["cnniqa-live"]["checks"]["certificate-breach"] == "passed"
    assert verdicts["niqe"]["certified"] is None
    assert verdicts["niqe"]["checks"]["certificate-breach"] == "not applicable"
    with (sessions.a / "verdict.csv").open() as fh:
        table = {r["metric"]: r for r in csv.DictReader(fh)}
    assert float(table["cnniqa-live"]["certified_bound"]) == pytest.approx(entry["bound"])
    assert table["niqe"]["certified_bound"] == ""
    with sqlite3.connect(sessions.folder / "mlflow.db") as db:
        (tag,) = db.execute(
            "select value from tags where key = 'certified/cnniqa-live' and run_uuid = ?", (sessions.run_a,)
        ).fetchone()
    assert tag.startswith(f"test_images: certified ≤ {entry['bound']:.3g} · achieved {entry['achieved']:.3g}")
    page = (sessions.a / "report" / "index.html").read_text(encoding="utf-8")
    assert "certified vs achieved" in page
    assert f"certified ≤ {entry['bound']:.3g} min-max · achieved {entry['achieved']:.3g}" in page


def test_the_leaderboard_from_cards_equals_the_leaderboard_from_the_store(sessions, cards_a, capsys):
    store = ["leaderboard", "--tracking-uri", sessions.uri, "--run", sessions.run_a, "--format", "json"]
    assert main([*store, "--out", str(sessions.folder / "board-store")]) == 0
    from_store = json.loads(capsys.readouterr().out)
    assert main(["leaderboard", "--cards", str(cards_a), "--format", "json", "--out", str(sessions.folder / "b")]) == 0
    from_cards = json.loads(capsys.readouterr().out)

    assert from_cards == from_store
    assert {r["metric"]: r["verdict"] for r in from_cards} == {
        "cnniqa-live": "fooled", "niqe": "robust", "rounded-sharpness": "unreliable"
    }  # fmt: skip
    worst = [r["worst_robustness_score"] for r in from_cards]
    assert worst == sorted(worst, reverse=True)
    assert main(["leaderboard", "--cards", str(cards_a), "--out", str(sessions.folder / "board-cards")]) == 0
    printed = capsys.readouterr().out
    assert "3 card(s) in " in printed
    assert "ranked by the worst case over the attacks" in printed


def test_compare_reports_a_changed_verdict_between_two_sessions_and_between_their_cards(sessions, cards_a, capsys):
    assert main(["compare", str(sessions.a), str(sessions.b), "--out", str(sessions.folder / "compare")]) == 0
    printed = capsys.readouterr().out
    assert "card-level changes, A -> B" in printed
    cnniqa_a = read_card(cards_a / "cnniqa-live.card.json")["verdict"]["text"]
    assert cnniqa_a.startswith("fooled at 4/255")
    assert f"cnniqa-live: verdict: {cnniqa_a} -> robust at 4/255" in printed

    cards_b = write_cards(sessions.b, sessions.folder / "cards-b", capsys)
    assert list(cards_b) == ["cnniqa-live"]
    assert main(["compare", str(cards_a), str(sessions.folder / "cards-b"), "--format", "json",
                 "--out", str(sessions.folder / "compare")]) == 0  # fmt: skip
    changes = json.loads(capsys.readouterr().out)
    by_change = {(c["metric"], c["change"]): c for c in changes}
    assert by_change["cnniqa-live", "verdict"]["b"] == cards_b["cnniqa-live"]["verdict"]["text"]
    assert by_change["cnniqa-live", "verdict"]["detail"] == "fooled -> robust"
    assert by_change["cnniqa-live", "max norm. gain"]["detail"] == "by ifgsm-eps4 -> fgsm-eps4"
    assert by_change["cnniqa-live", "max norm. gain"]["delta"] < 0
    assert by_change["cnniqa-live", "certificate only in A"]["where"] == "test_images (L2 0.05)"
    assert by_change["niqe", "card only in A"]["a"] == read_card(cards_a / "niqe.card.json")["verdict"]["text"]
    assert ("rounded-sharpness", "card only in A") in by_change
    assert main(["compare", str(cards_a), str(cards_a), "--out", str(sessions.folder / "compare")]) == 0
    assert "cards: no card-level change" in capsys.readouterr().out


def test_the_commands_say_what_to_do_with_a_metric_without_cases_or_a_folder_without_cards(sessions, capsys):
    empty = sessions.folder / "no-cards"
    empty.mkdir()
    assert main(["card", str(sessions.a), "--metric", "brisque", "--out", str(empty)]) == 2
    assert "has no case of brisque; leave out --metric to see its metrics" in capsys.readouterr().err
    assert main(["leaderboard", "--cards", str(empty), "--out", str(empty)]) == 2
    assert f"no robustness card (*.card.json); write cards with `iqa-robustness card SESSION --out {empty}`" in (
        capsys.readouterr().err
    )
    assert not list(empty.iterdir())


def test_a_badge_fits_its_texts_and_escapes_them():
    short, long = badge_svg("m", "robust", "#4c1"), badge_svg("m", "fooled at 2/255: norm. gain 3.2", "#e05d44")
    widths = [int(ElementTree.fromstring(svg).get("width")) for svg in (short, long)]
    assert widths[1] > widths[0] + 80  # 25 more characters at about 6 px each
    odd = ElementTree.fromstring(badge_svg("a<b & c", "robust", "#4c1"))
    assert odd.find(f"{SVG}title").text == "a<b & c: robust"
