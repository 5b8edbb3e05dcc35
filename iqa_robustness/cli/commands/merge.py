"""``iqa-robustness merge DIR... --out DIR``: the results folders of a grid's shards as one session.

Each DIR is the ``--results-dir`` of one shard (``pytest --shard K/N`` or ``--shard-images K/N``);
its newest session is taken. The output folder gets what one unsharded session would have
written: the case JSON files, ``summary.csv``, the per-image CSVs and a session record, with the
scores of image-sharded cases computed on the union of their images. With a tracking URI (the
option or ``MLFLOW_TRACKING_URI``) the merged session is logged to MLflow as one parent run
with a nested run per case. docs/results.md, "Long runs", shows the whole chain (train, shards, merge).
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path

from iqa_robustness.cli import CommandError
from iqa_robustness.cli.commands._store import add_store_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="combine the results folders of shards into one session (summary, per-image CSVs, MLflow)",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folders", type=Path, nargs="+", metavar="DIR", help="results folders of the shards")
    p.add_argument("--out", type=Path, required=True, help="results folder of the merged session")
    add_store_arguments(
        p, uri_help="log the merged session to this MLflow store (default: $MLFLOW_TRACKING_URI; neither: no MLflow)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from iqa_robustness.report.outputs import REPORT_DIR, write_outputs
    from iqa_robustness.runner.merge import MergeError, merge_results
    from iqa_robustness.runner.sessions import SessionRecord

    try:
        merged = merge_results(args.folders, out=args.out)
    except MergeError as exc:
        raise CommandError(str(exc)) from exc
    out: Path = args.out
    session = uuid.uuid4().hex[:12]
    record = SessionRecord(
        session,
        settings=merged.settings,
        merged_from=[f"{folder}:{source.session}" for folder, source in merged.sources],
    )
    cases_dir = record.cases_dir(out)
    for result in merged.results:
        result.save_json(cases_dir / f"{result.case_id}.json")
    from iqa_robustness.tracking import SessionLogger, TrackingError, result_tags, session_status, session_tags

    status = session_status(merged.results)
    weights = "random" if merged.settings.get("random_weights") else "pretrained"
    record.tags = {
        **session_tags(device=result_tags(merged.results).get("device", ""), weights_mode=weights),
        "session_id": session,
        "merged_from": ", ".join(record.merged_from),
    }
    write_outputs(merged.results, out, print, {**record.provenance(), "status": status})
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        logger = SessionLogger(uri, args.experiment, record.tags, out)
        finished = [r for r in merged.results if r.status != "interrupted"]
        interrupted = [r.case_id for r in merged.results if r.status == "interrupted"]
        try:
            logger.start()
            logger.finish(finished, status, interrupted=interrupted, report=out / REPORT_DIR)
        except TrackingError as exc:
            record.end(out, status.lower())
            raise CommandError(str(exc)) from exc
        record.mlflow_run_id, record.tracking_uri = logger.run_id, uri
        print(f"MLflow: experiment {args.experiment!r}, session run {logger.run_id} ({len(finished)} cases) at {uri}")
    record.end(out, status.lower())
    print(f"merged {len(merged.results)} case(s) from {len(merged.sources)} folder(s) into {out}")
    return 0
