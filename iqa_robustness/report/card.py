"""A robustness card per metric: what a session found about one metric, as JSON with a published schema.

A card (docs/card.md) is one JSON document per metric that a person or a tool can check without the
suite: the metric (name, implementation and its library's version, the checksum of its parameter
values), the data sets and their image counts, the clean agreement with subjective scores where
known, the verdict with its worst case per budget and the mean over attacks beside it, the certified
bound, every flag with its evidence, and how the numbers were made (the suite's version, the seeds,
the hardware). Its layout is the JSON Schema ``iqa_robustness/schemas/robustness-card-1.json``,
shipped with the package; every card is checked against it when it is written and when it is read
(:func:`validate_card`, the ``jsonschema`` package). The Markdown summary and the SVG badge are
:mod:`iqa_robustness.report.card_markdown`; the changes between two cards :mod:`iqa_robustness.report.card_changes`.

A card is made from a session's verdicts (:class:`~iqa_robustness.scores.verdict.MetricVerdict`) and
its logged cases (anything with the fields of :class:`iqa_robustness.tracking.LoggedCase`: ``case_id``,
``metric``, ``attack``, ``dataset``, ``status``, ``params``, ``metrics``, ``lower_better``), read from a
results folder or the MLflow store alike.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from iqa_robustness import __version__
from iqa_robustness.conventions import dataset_slug
from iqa_robustness.report.markup import slug
from iqa_robustness.scores.verdict import MetricVerdict, VerdictPolicy

#: the card's layout: its name and version (``robustness-card-1.json``); the version rises when a field changes meaning
CARD_SCHEMA = "robustness-card"
CARD_SCHEMA_VERSION = 1
SCHEMA_FILE = f"{CARD_SCHEMA}-{CARD_SCHEMA_VERSION}.json"
#: the files of one metric's card, ``<metric slug><suffix>``
CARD_SUFFIX, MARKDOWN_SUFFIX, BADGE_SUFFIX = ".card.json", ".card.md", ".badge.svg"
#: the libraries whose version the session's tags record (``<library>_version``), by a metric's ``source``
_LIBRARIES = ("pyiqa", "piq", "torchmetrics")
#: subjective-score agreement of the clean scores a case records (:func:`~iqa_robustness.scores.formulas.mos_scores`)
_MOS = {"srocc": "srocc_clean", "plcc": "plcc_clean", "krocc": "krocc_clean", "n": "n_mos"}


class CardError(ValueError):
    """A card that does not follow its schema, or a folder without cards; the message names the file."""


# ----------------------------------------------------------------------------- the schema


@functools.cache
def card_schema() -> dict[str, Any]:
    """The JSON Schema of the cards this version writes (package data ``schemas/robustness-card-1.json``)."""
    schema = resources.files("iqa_robustness").joinpath("schemas").joinpath(SCHEMA_FILE)  # 3.10: one part a call
    return json.loads(schema.read_text(encoding="utf-8"))


def validate_card(card: Any, where: str = "card") -> None:
    """Check a card against :func:`card_schema`.

    Raises:
        CardError: the card does not follow the schema; the message names ``where``, the field and what
            is wrong (the most relevant of the errors, :func:`jsonschema.exceptions.best_match`), or an
            unknown ``schema_version``.
    """
    import jsonschema

    if (
        isinstance(card, Mapping)
        and card.get("schema") == CARD_SCHEMA
        and card.get("schema_version")
        not in (
            None,
            CARD_SCHEMA_VERSION,
        )
    ):
        raise CardError(
            f"{where}: a {CARD_SCHEMA} of schema_version {card.get('schema_version')!r}; this version of the suite "
            f"reads version {CARD_SCHEMA_VERSION} (upgrade iqa-robustness, or make the card again with `card`)"
        )
    validator = jsonschema.Draft202012Validator(card_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(card))
    if error is not None:
        field = "/".join(str(p) for p in error.absolute_path) or "(the top level)"
        raise CardError(f"{where} is not a valid {CARD_SCHEMA}-{CARD_SCHEMA_VERSION}: at {field}: {error.message}")


# ----------------------------------------------------------------------------- making cards


def build_cards(
    verdicts: Sequence[MetricVerdict],
    cases: Sequence[Any],
    tags: Mapping[str, str],
    session: Mapping[str, Any],
    created: str | None = None,
) -> list[dict[str, Any]]:
    """One card per verdict, each checked against the schema (see :func:`build_card`)."""
    by_metric: dict[str, list[Any]] = defaultdict(list)
    for case in cases:
        by_metric[case.metric].append(case)
    return [build_card(v, by_metric[v.metric], tags, session, created) for v in verdicts]


def build_card(
    verdict: MetricVerdict,
    cases: Sequence[Any],
    tags: Mapping[str, str],
    session: Mapping[str, Any],
    created: str | None = None,
) -> dict[str, Any]:
    """The card of one metric.

    Args:
        verdict: the metric's verdict.
        cases: the metric's logged cases (their params name the metric's source, checksum, seeds, device).
        tags: the session's tags (library versions, git commit, device, the settings of a folder's session).
        session: where the session comes from: ``id``, ``ref`` (as named on the command line), ``source``
            (``results folder`` or ``mlflow``), and ``mlflow_run_id``, ``started``, ``finished`` where known.
        created: when the card is made (ISO 8601, UTC); now by default.

    Raises:
        CardError: the card does not follow its schema (a bug: the message says where).
    """
    card: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "schema_version": CARD_SCHEMA_VERSION,
        "created": created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metric": _metric_facts(verdict, cases, tags),
        "datasets": _datasets(cases),
        "attacks": _attacks(cases),
        "badge": badge_of(verdict),
        "verdict": verdict.to_dict(),
        "suite": {"name": "iqa-robustness", "version": _suite_version(tags), "card_written_by": __version__},
        "session": _session(session, tags),
        "seeds": _seeds(cases, tags),
        "hardware": _hardware(cases, tags),
    }
    validate_card(card, f"the card of {verdict.metric}")
    return card


def _first_param(cases: Sequence[Any], key: str) -> str | None:
    for case in cases:
        value = case.params.get(key)
        if value not in (None, "", "None"):
            return str(value)
    return None


def _metric_facts(verdict: MetricVerdict, cases: Sequence[Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """Name, implementation, library and version, declared facts, weights and the checksum of the parameters."""
    name = verdict.base_metric or verdict.metric
    spec, implementation = _spec(name)
    source = _first_param(cases, "metric_source") or (spec.source if spec is not None else None)
    if implementation is None and source and source.startswith("module:"):  # a user's metric: its import path
        implementation = source.removeprefix("module:")
    library = source if source in _LIBRARIES else None
    if library is not None:
        version = tags.get(f"{library}_version")
    elif source == "own":
        version = _suite_version(tags)
    else:
        version = None
    checksum = _first_param(cases, "metric_checksum")
    lower_better = spec.lower_better if spec is not None else (bool(cases[0].lower_better) if cases else None)
    return {
        "name": verdict.metric,
        "base_metric": verdict.base_metric or None,
        "defence": verdict.defence or None,
        "source": source,
        "implementation": implementation,
        "library": library,
        "version": _known(version),
        "description": spec.description if spec is not None else None,
        "kind": spec.kind if spec is not None else None,
        "lower_better": lower_better,
        "bounds": list(spec.bounds) if spec is not None else None,
        "differentiable": spec.differentiable if spec is not None else None,
        "weights_mode": verdict.weights_mode or None,
        "weight_files": list(spec.weight_files) if spec is not None else [],
        "weights_checksum": {"algorithm": "sha256", "of": "parameter values", "value": checksum} if checksum else None,
    }


def _spec(name: str) -> tuple[Any, str | None]:
    """The metric's declared facts and the module that builds it, or ``(None, None)`` where this installation
    cannot resolve the name (a metric of a package that is not installed here)."""
    from iqa_robustness.metrics.registry import get_spec, metric_module

    try:
        return get_spec(name), metric_module(name)
    except Exception:  # any failure to resolve (unknown name, a module that does not import): facts unknown
        return None, None


def _known(value: Any) -> Any:
    return None if value in (None, "", "absent", "None") else value


def _suite_version(tags: Mapping[str, str]) -> str | None:
    return _known(tags.get("iqa_robustness_version") or tags.get("suite_version"))


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _datasets(cases: Sequence[Any]) -> list[dict[str, Any]]:
    """Per data set: images scored (the most any case scored) and skipped, the image size, clean MOS agreement."""
    groups: dict[str, list[Any]] = defaultdict(list)
    for case in cases:
        groups[dataset_slug(case.dataset)].append(case)
    out = []
    for name, members in sorted(groups.items()):
        images = [_number(c.metrics.get("n_images")) for c in members]
        skipped = [_number(c.metrics.get("n_skipped")) for c in members]
        size = _number(_first_param(members, "image_size"))
        rated = [c for c in members if "srocc_clean" in c.metrics]  # clean scores, the same in every case
        mos = {k: _number(rated[0].metrics.get(key)) for k, key in _MOS.items()} if rated else None
        if mos is not None:
            mos["n"] = int(mos["n"]) if mos["n"] is not None else None
        out.append(
            {
                "name": name,
                "path": str(members[0].dataset),
                "images": int(max((i for i in images if i is not None), default=0)),
                "skipped": int(max((s for s in skipped if s is not None), default=0)),
                "image_size": int(size) if size is not None else None,
                "mos": mos,
            }
        )
    return out


def _attacks(cases: Sequence[Any]) -> list[dict[str, Any]]:
    """Every attack of the metric's cases: its label, the registered attack, and how its cases ended."""
    out: dict[str, dict[str, Any]] = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        entry = out.setdefault(
            case.attack, {"label": case.attack, "name": str(case.params.get("attack_name") or case.attack), "cases": 0}
        )
        entry["cases"] += 1
        entry.setdefault("statuses", {})
        entry["statuses"][case.status] = entry["statuses"].get(case.status, 0) + 1
    return list(out.values())


def _session(session: Mapping[str, Any], tags: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": _known(session.get("id") or tags.get("session_id")),
        "ref": _known(session.get("ref")),
        "source": session.get("source") or "results folder",
        "mlflow_run_id": _known(session.get("mlflow_run_id") or tags.get("mlflow_run_id")),
        "started": _known(session.get("started") or tags.get("started")),
        "finished": _known(session.get("finished") or tags.get("finished")),
        "git_commit": _known(tags.get("git_commit")),
        "git_branch": _known(tags.get("git_branch")),
        "git_dirty": {"true": True, "false": False}.get(str(tags.get("git_dirty", "")).lower()),
        "weights_mode": _known(tags.get("weights_mode")),
        "benchmark_number": str(tags.get("benchmark_number", "true")).lower() != "false",
    }


def _seeds(cases: Sequence[Any], tags: Mapping[str, str]) -> dict[str, Any]:
    """The session's base seed (``--seed``, where the session records it) and each case's own seed."""
    base = _number(tags.get("seed"))
    per_case = {}
    for case in sorted(cases, key=lambda c: c.case_id):
        seed = _number(case.params.get("seed"))
        if seed is not None:
            per_case[case.case_id] = int(seed)
    return {"base": int(base) if base is not None else None, "cases": per_case}


def _hardware(cases: Sequence[Any], tags: Mapping[str, str]) -> dict[str, Any]:
    devices = sorted({str(c.params["device"]) for c in cases if c.params.get("device")})
    names = sorted({str(c.params["device_name"]) for c in cases if c.params.get("device_name")})
    return {
        "device": ", ".join(devices) or _known(tags.get("device")),
        "device_name": ", ".join(names) or None,
        "torch_version": _known(tags.get("torch_version")),
        "python_version": _known(tags.get("python_version")),
        "platform": _known(tags.get("platform")),
    }


# ----------------------------------------------------------------------------- the badge's words


#: a badge's colour per verdict (shields.io's named colours: brightgreen, red, orange, lightgrey)
BADGE_COLOURS = {"robust": "#4c1", "fooled": "#e05d44", "unreliable": "#fe7d37", "no scores": "#9f9f9f"}


def badge_of(verdict: MetricVerdict) -> dict[str, str]:
    """The badge's label (the metric), message and colour.

    ``robust at 4/255`` (the largest budget it held at; ``robust`` without ``--eps``), ``fooled at 2/255:
    norm. gain 3.2`` (the smallest budget an attack fooled it at, with that attack's normalised gain),
    ``evaluation unreliable``, or ``no scores``.
    """
    from iqa_robustness.scores.verdict import FOOLED, ROBUST, UNRELIABLE

    state = verdict.verdict
    scored = [c for c in verdict.worst_case if c.verdict == state]
    budgets = [c for c in scored if c.budget is not None]
    if state == FOOLED:
        first = min(scored, key=lambda c: (math.inf if c.budget is None else c.budget, -c.max_norm_abs_gain))
        at = f" at {first.budget_units:g}/255" if first.budget is not None else ""
        message = f"fooled{at}: norm. gain {first.max_norm_abs_gain:.2g}"
    elif state == ROBUST:
        message = f"robust at {max(c.budget_units for c in budgets):g}/255" if budgets else "robust"
    elif state == UNRELIABLE:
        message = "evaluation unreliable"
    else:
        message = state
    return {"label": verdict.metric, "message": message, "colour": BADGE_COLOURS.get(state, BADGE_COLOURS["no scores"])}


# ----------------------------------------------------------------------------- files


def card_stem(metric: str) -> str:
    """The file stem of a metric's card: its name with anything but letters, digits, ``_.-`` as ``-``."""
    return slug(metric)


def write_card(card: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """The card's JSON, its Markdown summary and its badge, in ``out`` (``<stem>.card.json``, ``.card.md``,
    ``.badge.svg``); returns their paths by kind (``json``, ``markdown``, ``badge``)."""
    from iqa_robustness.report.card_markdown import badge_svg, card_markdown

    out.mkdir(parents=True, exist_ok=True)
    stem = card_stem(card["metric"]["name"])
    paths = {"json": out / f"{stem}{CARD_SUFFIX}", "markdown": out / f"{stem}{MARKDOWN_SUFFIX}"}
    paths["badge"] = out / f"{stem}{BADGE_SUFFIX}"
    texts = {
        "json": json.dumps(card, indent=1, allow_nan=False) + "\n",
        "markdown": card_markdown(card, badge_file=paths["badge"].name),
        "badge": badge_svg(**card["badge"]),
    }
    for kind, path in paths.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(texts[kind], encoding="utf-8")
        tmp.replace(path)
    return paths


def read_card(path: Path) -> dict[str, Any]:
    """A card file, checked against its schema.

    Raises:
        CardError: the file is not JSON or not a valid card; the message names the file.
    """
    try:
        card = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{path}: not a readable JSON card ({exc})") from None
    validate_card(card, str(path))
    return card


def is_card_source(path: str | Path) -> bool:
    """Whether ``path`` is a card file or a folder of cards (not a session's results folder)."""
    p = Path(path)
    if p.is_file():
        return p.name.endswith(CARD_SUFFIX) or p.suffix == ".json"
    return p.is_dir() and not (p / "sessions").is_dir() and any(p.glob(f"*{CARD_SUFFIX}"))


def read_cards(path: str | Path) -> list[dict[str, Any]]:
    """The cards of a card file or of a folder (its ``*.card.json``, sorted by name), each validated.

    Raises:
        CardError: no card there, an invalid card, or two cards of one metric (a folder holds one per metric).
    """
    p = Path(path)
    files = [p] if p.is_file() else sorted(p.glob(f"*{CARD_SUFFIX}")) if p.is_dir() else []
    if not files:
        raise CardError(
            f"{path}: no robustness card (*{CARD_SUFFIX}); write cards with `iqa-robustness card SESSION --out {path}`"
        )
    cards = [read_card(f) for f in files]
    seen: dict[str, Path] = {}
    for f, card in zip(files, cards, strict=True):
        metric = card["metric"]["name"]
        if metric in seen:
            raise CardError(
                f"{path}: two cards of metric {metric!r} ({seen[metric].name}, {f.name}); a folder of cards holds one "
                "per metric: keep one of them, or put the other session's cards in another folder"
            )
        seen[metric] = f
    return cards


def card_verdicts(cards: Sequence[Mapping[str, Any]], policy: VerdictPolicy | None = None) -> list[MetricVerdict]:
    """The verdicts the cards carry, judged again at ``policy``'s ``fooled_gain`` when one is given."""
    verdicts = [MetricVerdict.from_dict(card["verdict"]) for card in cards]
    return [v.judged(policy) for v in verdicts] if policy is not None else verdicts
