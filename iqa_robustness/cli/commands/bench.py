"""``iqa-robustness bench``: attack speed against the metric's own limit and a one-image-at-a-time loop.

See :mod:`iqa_robustness.bench` for what is measured, and docs/speed.md for measured figures. The table
goes to stdout; ``--output`` also writes it as CSV (``--format csv`` prints the CSV instead of the table).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import platform
import sys
from pathlib import Path

COLUMNS = ("task", "images_per_s", "s_per_image", "reference_s_per_image", "speedup", "iterations", "efficiency")


def register(sub: argparse._SubParsersAction) -> None:
    from iqa_robustness.bench import DEFAULT_ATTACKS, DEFAULT_UNIVERSAL

    p = sub.add_parser(
        "bench",
        help="time attacks against the metric's forward+backward floor and a per-image reference loop",
        description=(
            "For one metric, device, image size and batch size: the metric's forward+backward time per image "
            "(the floor), each attack batched as the suite runs it and one image at a time as the benchmark's "
            "code does, universal-perturbation training, and evaluation; for black-box attacks the floor is the "
            "metric's best forward throughput (median time per image at its best batch size). "
            "Efficiency = iterations x floor / attack time; speed-up = reference time / suite time. "
            "Medians of --repeats runs after --warmup. "
            "On the CPU it keeps freed memory in the process as a suite run does (docs/speed.md; "
            "IQA_ROBUSTNESS_ALLOCATOR=system leaves the allocator as it is)."
        ),
    )
    p.add_argument("--metric", default="paq2piq", help="metric name (default: paq2piq)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--image-size", type=int, default=256, help="side of the square test images (default: 256)")
    p.add_argument("--batch-size", type=int, default=8, help="images per batch (default: 8)")
    p.add_argument(
        "--attacks", default=",".join(DEFAULT_ATTACKS), help="image-specific attacks, comma-separated ('' for none)"
    )
    p.add_argument(
        "--universal",
        default=",".join(DEFAULT_UNIVERSAL),
        help="universal attacks whose training to time, comma-separated ('' for none; default: uap)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    p.add_argument(
        "--reference-images", type=int, default=4, help="images the one-at-a-time reference loop runs per repeat"
    )
    p.add_argument(
        "--queries", type=int, default=200, help="query budget per image of the black-box attacks (default: 200)"
    )
    p.add_argument("--train-steps", type=int, default=4, help="optimisation steps per timed training run")
    p.add_argument("--weights-dir", default=None, help="folder of metric weight files")
    p.add_argument("--random-weights", action="store_true", help="random weights (speed does not depend on them)")
    p.add_argument(
        "--amp", choices=["fp16", "bf16"], default=None, help="run the metric under autocast (reports the score change)"
    )
    p.add_argument("--channels-last", action="store_true", help="channels-last memory layout")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument(
        "--project",
        action="store_true",
        help="also project the hours of this metric's full benchmark grid (all attacks, NIPS 2017 + Vimeo test + "
        "Derf, 3 amplitudes, 2 training sets) on this device, for the suite and for the reference loop",
    )
    p.add_argument(
        "--train-images", type=int, default=10_000, help="images per universal training set in the projection"
    )
    p.add_argument("--format", choices=["table", "csv"], default="table", help="output format (default: table)")
    p.add_argument("--output", type=Path, default=None, help="also write the results as CSV to this file")
    p.set_defaults(func=run)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def format_table(rows: list[dict[str, object]]) -> str:
    header = ["task", "img/s", "s/img", "ref s/img", "speed-up", "iters", "efficiency"]
    body = [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in [header, ["-" * w for w in widths], *body]
    ]
    return "\n".join(lines) + "\n"


def format_projection(results: list, image_side: int, train_images: int) -> str:
    """Hours of the metric's full grid on this device: the suite against the reference loop."""
    from iqa_robustness.bench import BENCHMARK_TEST_SETS, project_hours

    suite = project_hours(results, image_side, train_images=train_images)
    reference = project_hours(results, image_side, train_images=train_images, reference=True)
    sets = ", ".join(f"{t.name} {t.images}x{t.width}x{t.height}" for t in BENCHMARK_TEST_SETS)
    lines = [
        f"projection for this metric's full grid ({sets}; 2 training sets of {train_images} images; "
        "3 amplitudes; per-image times scaled by pixel count):",
        f"  {'part':20s} {'suite h':>10s} {'reference h':>12s}",
    ]
    lines += [f"  {part:20s} {suite[part]:10.1f} {reference[part]:12.1f}" for part in suite]
    return "\n".join(lines) + "\n"


def format_csv(rows: list[dict[str, object]], context: dict[str, object]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*context, *rows[0]], lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**context, **{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()}})
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    import torch

    from iqa_robustness.attacks.query_batch import describe_batches
    from iqa_robustness.bench import BenchConfig, BenchRow, bench_images, precision_difference, run_bench
    from iqa_robustness.metrics import create_metric
    from iqa_robustness.runner.allocator import tune_allocator
    from iqa_robustness.runner.config import SuiteConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {
        "--batch-size": args.batch_size,
        "--repeats": args.repeats,
        "--image-size": args.image_size,
        "--queries": args.queries,
    }
    for name, value in sizes.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    device = SuiteConfig(device=args.device).resolved_device()
    allocator = tune_allocator() if device.type == "cpu" else "-"  # as a suite run on this device
    metric = create_metric(args.metric, device=device, weights="random" if args.random_weights else args.weights_dir)
    speed_options = {
        "autocast": {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp or ""),
        "channels_last": args.channels_last,
    }
    config = BenchConfig(
        batch_size=args.batch_size,
        image_size=args.image_size,
        attacks=_names(args.attacks),
        universal=_names(args.universal),
        repeats=args.repeats,
        warmup=args.warmup,
        reference_images=args.reference_images,
        queries=args.queries,
        train_steps=args.train_steps,
    )
    score_change = float("nan")
    if args.amp or args.channels_last:
        probe = bench_images(args.batch_size, args.image_size, device)
        score_change = precision_difference(metric, probe, **speed_options)
    metric.set_speed_options(**speed_options)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    context = {
        "metric": args.metric,
        "weights": metric.weights_mode,
        "device": f"{device} ({gpu})",
        "threads": torch.get_num_threads(),
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "amp": args.amp or "off",
        "channels_last": args.channels_last,
        "torch": torch.__version__,
        "allocator": allocator,
    }
    table = args.format == "table"
    if table:
        print(
            f"iqa-robustness bench: {args.metric} ({metric.weights_mode} weights) on {context['device']}, "
            f"{torch.get_num_threads()} threads, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
            f"median of {args.repeats} after {args.warmup} warm-up; reference = one image at a time",
            flush=True,
        )
        if device.type == "cpu":
            print(f"memory allocator: {allocator}", flush=True)
        if not math.isnan(score_change):
            print(f"largest score change from the speed options: {score_change:.3g} of the score range", flush=True)

    def progress(row: BenchRow) -> None:
        print(f"  {row.task}: {row.seconds_per_image:.4g} s/img", file=sys.stderr, flush=True)

    forward: dict[int, float] = {}
    results = run_bench(metric, config, report=progress, report_forward=forward.update)
    rows = [r.as_dict() for r in results]
    if table:
        sys.stdout.write(format_table(rows))
        print(
            "efficiency = iterations x floor / time (1 = the attack costs only its metric passes); "
            "train:* rows count training images, evaluation = clean + attacked scoring per image and attack"
        )
        if forward:
            per_batch = ", ".join(f"{b}: {t * 1e3:.3g}" for b, t in forward.items())
            print(
                "forward = the best forward throughput (median per image at the best batch size), the floor of the "
                "black-box attacks "
                f"(their iters = queries used per image); ms per image at each batch: {per_batch}"
            )
            print(f"query batch the black-box attacks chose (attacks/query_batch.py): {describe_batches(metric)}")
        if args.project:
            sys.stdout.write(format_projection(results, args.image_size, args.train_images))
    else:
        sys.stdout.write(format_csv(rows, {**context, "score_change": score_change}))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(format_csv(rows, {**context, "score_change": score_change}))
        if table:
            print(f"written: {args.output}")
    return 0
