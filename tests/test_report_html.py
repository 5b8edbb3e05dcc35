"""The session's HTML page: self-contained, one heatmap cell per case, robust to broken cases; seen in a browser.

The results are real: a small grid (cnniqa-live and brisque with random weights at 64 px, fgsm,
ifgsm and a one-step uap at two amplitudes on the benchmark's five test images) runs once for the
module. The browser test opens the page in headless Chromium and keeps a screenshot for CI.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from iqa_robustness.report.html import write_report
from iqa_robustness.scores.results import CaseResult

REPO_ROOT = Path(__file__).resolve().parent.parent
PROVENANCE = {"git_commit": "0123abcd", "git_branch": "report", "device": "cpu", "session_id": "test-session"}
RANDOM = {**PROVENANCE, "weights_mode": "random", "benchmark_number": "false"}
BANNER = "Random weights: these are not benchmark numbers"
HEATMAPS = ("robustness_score", "norm_abs_gain")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# --------------------------------------------------------------------------- the page, parsed


class _Page(HTMLParser):
    """What the tests look at: heatmap cells per heatmap, images, section ids, the text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: dict[str, list[dict[str, str]]] = {}
        self.images: list[dict[str, str]] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self._heatmap: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "div" and "heatmap" in a.get("class", "").split():
            self._heatmap = a["data-score"]
            self.cells[self._heatmap] = []
        if tag == "td" and "cell" in a.get("class", "").split():
            self.cells[self._heatmap].append(a)
        if tag == "a" and self._heatmap and self.cells[self._heatmap]:
            self.cells[self._heatmap][-1].setdefault("href", a.get("href", ""))
        if tag == "img":
            self.images.append(a)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(self.text)


def _page(path: Path) -> _Page:
    return _Page(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- real results, once


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, msu_test_images: Path, pyiqa_weights: Path) -> list[CaseResult]:
    """Eight real cases: 2 metrics x (fgsm, ifgsm, uap @0.2, uap @0.8), random weights, 64 px."""
    import torch

    from iqa_robustness.runner.config import SuiteConfig
    from iqa_robustness.runner.grid import build_grid
    from iqa_robustness.runner.suite import Suite

    if not msu_test_images.is_dir():
        pytest.skip(f"{msu_test_images} not found: set IQA_ROBUSTNESS_SHARED to the reference folder")
    torch.set_num_threads(2)
    config = SuiteConfig(
        device="cpu",
        random_weights=True,
        image_size=64,
        max_images=5,
        uap_steps=1,
        pairs_to_save=3,
        results_dir=tmp_path_factory.mktemp("results"),
    )
    suite = Suite(config)
    grid = build_grid(
        ["cnniqa-live", "brisque"], ["fgsm", "ifgsm", "uap"], [str(msu_test_images)], amplitudes=(0.2, 0.8)
    )
    return [suite.run(case) for case in grid]


@pytest.fixture(scope="module")
def broken(session: list[CaseResult], tmp_path_factory: pytest.TempPathFactory) -> list[CaseResult]:
    """The session plus an error case without rows (a name to escape) and a case whose pair files are gone."""
    error = CaseResult(
        case_id="ifgsm-<img src=x>-msu5",
        metric="<img src=x>",
        attack="ifgsm",
        dataset="msu5",
        status="error",
        message="RuntimeError: the metric ran out of memory",
    )
    folder = tmp_path_factory.mktemp("gone")
    first = session[0]
    gone = dataclasses.replace(
        first,
        case_id=first.case_id + "-copy",
        dataset="elsewhere",
        artifacts={name: str(folder / name) for name in first.artifacts},
    )
    return [*session, error, gone]


@pytest.fixture(scope="module")
def report(session: list[CaseResult], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_report(session, tmp_path_factory.mktemp("report"), RANDOM, title="test session")


# --------------------------------------------------------------------------- in-process checks


def test_the_page_is_one_file_that_needs_nothing_from_elsewhere(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    assert report.name == "index.html"
    assert sorted(p.name for p in report.parent.iterdir()) == ["index.html"]
    for outside in ("http://", "https://", 'src="/', "<link", "<script src", "url("):
        assert outside not in text, outside
    page = _page(report)
    assert page.images, "the page shows images"
    assert all(img["src"].startswith("data:image/") for img in page.images)
    assert report.stat().st_size < 5 * 2**20


def test_each_heatmap_has_exactly_one_cell_per_case_linking_to_its_section(report: Path, session) -> None:
    page = _page(report)
    assert set(page.cells) == set(HEATMAPS)
    for cells in page.cells.values():
        assert sorted(c["data-case"] for c in cells) == sorted(r.case_id for r in session)
        for cell in cells:
            assert cell["href"].startswith("#case-")
            assert cell["href"][1:] in page.ids


def test_every_case_is_named_with_its_scores_and_most_fooled_images(report: Path, session) -> None:
    page = _page(report)
    for r in session:
        assert r.case_id in page.plain
    assert "uap @0.2" in page.plain
    assert "uap @0.8" in page.plain
    # per case: one plot and up to three figures of three images (clean, adversarial, perturbation)
    shown = [img for img in page.images if img.get("alt") in ("clean", "adversarial")]
    assert len(shown) == 2 * 3 * len(session)
    assert "Universal perturbations" in page.plain
    assert "Leaderboard" in page.plain


def test_the_verdict_leads_the_page_with_each_metrics_worst_case_and_the_mean_beside_it(report: Path, session) -> None:
    text = report.read_text(encoding="utf-8")
    page = _page(report)
    assert "verdict" in page.ids
    assert text.index('id="verdict"') < text.index('id="overview"') < text.index('id="cases"')
    for metric in ("cnniqa-live", "brisque"):
        assert f'id="verdict-{metric}"' in text
        cases = [r for r in session if r.metric == metric]
        worst = min(cases, key=lambda r: r.scores["robustness_score"])
        block = text[text.index(f'id="verdict-{metric}"') :].split('<div class="verdict', 1)[0]
        assert f'href="#case-{worst.case_id}"' in block  # the worst attack links to its case
        assert "Mean over " in block
    assert "certified vs achieved" not in text  # no certificates in this session: no column


def test_random_weights_show_the_banner_and_pretrained_weights_do_not(session, report: Path, tmp_path: Path) -> None:
    assert BANNER in report.read_text(encoding="utf-8")
    pretrained = [dataclasses.replace(r, weights_mode="pretrained") for r in session]
    path = write_report(pretrained, tmp_path, {**PROVENANCE, "weights_mode": "pretrained"})
    assert BANNER not in path.read_text(encoding="utf-8")
    flagged = write_report(pretrained, tmp_path / "flagged", {**PROVENANCE, "benchmark_number": "false"})
    assert BANNER in flagged.read_text(encoding="utf-8")


def test_an_error_case_and_missing_pair_files_leave_a_working_page(broken, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="iqa_robustness.report"):
        path = write_report(broken, tmp_path, RANDOM)
    text = path.read_text(encoding="utf-8")
    page = _Page(text)
    for cells in page.cells.values():
        assert len(cells) == len(broken)
        (error,) = (c for c in cells if c["data-case"] == "ifgsm-<img src=x>-msu5")
        assert "nodata" in error["class"].split()
    assert "<img src=x>" not in text
    assert "&lt;img src=x&gt;" in text
    assert "the metric ran out of memory" in text
    assert "missing or unreadable" in text
    assert any("cannot show the image pair" in m for m in caplog.messages)


def test_a_single_case_with_nan_scores_and_no_artefacts_is_a_page(tmp_path: Path) -> None:
    rows = [
        {"image_name": f"{i}.png", "clear": 10.0 + i, "attacked": 9.0 + i, "psnr": 40.0, "ssim": 0.99, "mse": 1e-4}
        for i in range(3)
    ]
    case = CaseResult(
        case_id="fgsm-niqe-msu5",
        metric="niqe",
        attack="fgsm",
        dataset="msu5",
        rows=rows,
        scores={"robustness_score": math.nan, "norm_abs_gain": 0.5},
        lower_better=True,
    )
    page = _page(write_report([case], tmp_path, {}))
    assert [c["data-case"] for c in page.cells["robustness_score"]] == ["fgsm-niqe-msu5"]
    assert "No image pairs were kept" in page.plain


# --------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    override = os.environ.get("IQA_ROBUSTNESS_CHROMIUM")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.browser
def test_the_page_renders_in_chromium_without_errors_and_every_image_loads(broken, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    chromium = _chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium found ($IQA_ROBUSTNESS_CHROMIUM, /usr/bin/chromium, chromium, chromium-browser, "
            "google-chrome on PATH); set IQA_ROBUSTNESS_CHROMIUM to one"
        )
    path = write_report(broken, tmp_path, RANDOM, title="test session")
    shots = Path(os.environ.get("IQA_ROBUSTNESS_ARTEFACTS", REPO_ROOT / "reports"))
    shots.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(path.as_uri(), wait_until="load")
            counts = page.evaluate(
                "() => [...document.querySelectorAll('div.heatmap')].map("
                "h => [h.dataset.score, h.querySelectorAll('td.cell').length])"
            )
            broken_images = page.evaluate(
                "() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt)"
            )
            n_images = page.evaluate("() => document.images.length")
            verdicts = page.evaluate(
                "() => [...document.querySelectorAll('#verdict div.verdict')].filter(v => v.offsetHeight > 0)"
                ".map(v => [v.querySelector('h3').textContent, v.getBoundingClientRect().top])"
            )
            cases_top = page.evaluate("() => document.querySelector('#cases').getBoundingClientRect().top")
            page.screenshot(path=str(shots / "report-screenshot.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert dict(counts) == dict.fromkeys(HEATMAPS, len(broken))
    assert n_images > 0
    assert broken_images == []
    shown = {title.split(" ")[0] for title, _ in verdicts}
    assert {"cnniqa-live", "brisque"} <= shown, verdicts
    assert all(top < cases_top for _, top in verdicts), "the verdict comes before the per-case detail"
    assert (shots / "report-screenshot.png").stat().st_size > 0
