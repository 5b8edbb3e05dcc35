"""The black-box attacks side by side with the follow-up benchmark's own code, on the same metric and images.

Runs, for each black-box attack, the source's attack function (msu-video-group/adversarial-defenses-for-iqa,
``metrics/methods/<name>/run.py``, read from a local copy whose path is given; nothing of it is part of this
repository) and the suite's attack, on cnniqa-live with its real weights and the msu5 images, at one query
budget, and prints a table of seconds per image: the source one image at a time (as its evaluation loop calls
it), the suite's attack with the images batched and one image at a time, the speed-up, and the efficiency
against the metric's best forward throughput (queries used x the forward seconds per image at the best batch
/ attack seconds per image; per batch, calls timed back to back for seconds before and after the attack, in
the attack's process, pooled), the same against the stricter median floor (per batch the mean of the median
calls before and after), and the share of the attack's time spent inside the metric's calls.

Every run is a process of its own, so that each has the allocator it is meant to have: the source's runs
glibc's defaults, as its users run it (and, in the variant ``source+alloc``, the suite's setting, which tells
the allocator's share from the code's), the suite's runs the setting a suite run applies on the CPU
(``iqa_robustness/runner/allocator.py``; docs/speed.md). Repetitions are interleaved (every variant of an
attack, then the next attack; the variants' order rotates each repetition), and the table shows medians
with their ranges, the speed-up per repetition.

To run the source's functions on a CPU at another budget the script changes, in memory, the constants that fix
them to a GPU and to 10 000 queries (each substitution must match the source exactly once, or the script
stops): Square's ``n_iters``, Parsimonious's and Patch-RS's ``max_queries``, NES's ``max_iters`` (40 queries
each), One-pixel's generations (``iters``, 300 individuals each), and the ``'cuda'`` device strings.

Usage (docs/speed.md shows the figures it gave)::

    git clone https://github.com/msu-video-group/adversarial-defenses-for-iqa /tmp/msu-src  # commit 2642c99
    python benchmarks/blackbox_vs_source.py /tmp/msu-src --weights-dir /work/shared/weights \\
        --image-size 256 --queries 1000 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch

#: the suite's attack name -> the source's folder under metrics/methods
SOURCE_FOLDERS = {
    "square": "square-attack",
    "parsimonious": "parsimonious",
    "patch-rs": "patch-rs",
    "nes": "grad-est",
    "onepixel": "onepixel",
}
VARIANTS = ("source", "ours", "ours:single", "source+alloc")
#: One-pixel's individuals per generation in the source (popsize 300 over 15 parameters for 3 pixels)
ONEPIXEL_POPULATION = 300
#: NES's queries per iteration in the source (20 antithetic pairs)
NES_QUERIES = 40


def onepixel_generations(queries: int) -> int:
    """Generations after the first of One-pixel's population of 300 that ``queries`` pay for (both sides)."""
    return max(0, queries // ONEPIXEL_POPULATION - 1)


def substitutions(name: str, queries: int, device: str) -> list[tuple[str, str]]:
    """What the script changes in the source's ``run.py`` of attack ``name``: (old, new) pairs."""
    cuda = [("'cuda'", repr(device))]
    return {
        "square": [("device = 'cuda'", f"device = {device!r}"), ("n_iters = 10000", f"n_iters = {queries}")],
        "parsimonious": [("max_queries = 10000", f"max_queries = {queries}")],
        "patch-rs": [*cuda, ("max_queries = 10000", f"max_queries = {queries}")],
        "nes": [("max_iters = 250", f"max_iters = {max(1, queries // NES_QUERIES)}")],
        "onepixel": [("'cuda:0'", repr(device))],
    }[name]


def load_source(source: Path, name: str, queries: int, device: str) -> types.ModuleType:
    """The source's ``run.py`` of attack ``name``, with :func:`substitutions` applied, as a module."""
    path = source / "metrics" / "methods" / SOURCE_FOLDERS[name] / "run.py"
    if not path.is_file():
        raise SystemExit(f"{path} not found: give the folder of a copy of adversarial-defenses-for-iqa")
    text = path.read_text()
    for old, new in substitutions(name, queries, device):
        count = text.count(old)
        if count == 0 or (count > 1 and old not in ("'cuda'", "'cuda:0'")):
            raise SystemExit(f"{path}: {old!r} found {count} times; this script expects commit 2642c99")
        text = text.replace(old, new)
    sys.modules.setdefault("fgsm_evaluate", types.ModuleType("fgsm_evaluate")).test_main = lambda *a, **k: None
    module = types.ModuleType(f"source_{name.replace('-', '_')}")
    exec(compile(text, str(path), "exec"), module.__dict__)  # the source's code, run as its script would
    return module


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """One timed run: ``job`` names the attack, the variant and the settings; returns times, queries and gain."""
    if job["variant"] in ("ours", "ours:single", "source+alloc"):
        from iqa_robustness.runner.allocator import tune_allocator

        allocator = tune_allocator()
    else:
        allocator = "the system's, unchanged"
    import numpy as np

    from iqa_robustness.attacks import create_attack
    from iqa_robustness.attacks.queries import recording_queries
    from iqa_robustness.attacks.query_batch import describe_batches
    from iqa_robustness.bench import forward_seconds, forward_throughput
    from iqa_robustness.data.registry import resolve_dataset
    from iqa_robustness.metrics import create_metric

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    np.random.seed(0)
    device = torch.device(job["device"])
    metric = create_metric("cnniqa-live", device=device, weights=job["weights_dir"])
    images = torch.stack([item.load() for item in resolve_dataset(job["dataset"], size=job["image_size"])])
    images = images[: job["max_images"]].to(device)
    name, queries = job["attack"], job["queries"]
    out: dict[str, Any] = {**job, "allocator": allocator, "load": os.getloadavg()[0]}
    if job["variant"].startswith("ours"):
        out["forward_s"] = forward_seconds(metric, images)
        out["throughput_before"] = forward_throughput(metric, images)
        # One-pixel: the source's population of 300 for as many generations as the source runs
        kwargs = {"maxiter": onepixel_generations(queries)} if name == "onepixel" else {}
        attack = create_attack(name, queries=queries, **kwargs)
        batches = [images] if job["variant"] == "ours" else [images[i : i + 1] for i in range(len(images))]
        timed = MetricTime(metric)
        start = time.perf_counter()
        with recording_queries() as log, timed:
            adversarial = torch.cat([attack(metric, x) for x in batches])
        seconds = time.perf_counter() - start
        used = sum(r.used for r in log.records)
        out["metric_seconds_per_image"] = timed.seconds / len(images)
        out["query_batch"] = describe_batches(metric)
        out["forward_after_s"] = forward_seconds(metric, images)
        out["throughput_after"] = forward_throughput(metric, images)
    else:
        module = load_source(Path(job["source"]), name, queries, job["device"])
        model = SourceModel(metric)
        kwargs = {"iters": onepixel_generations(queries)} if name == "onepixel" else {}
        results = []
        start = time.perf_counter()
        for i in range(len(images)):  # the source's evaluation loop: one image per call (batch_size=1)
            result = module.attack(images[i : i + 1].clone(), model=model, device=job["device"], **kwargs)
            results.append(as_batch(result))
        seconds = time.perf_counter() - start
        adversarial = torch.cat(results).to(device).float()
        used = model.scored
    with torch.no_grad():
        gain = (metric.quality(adversarial.clamp(0, 1)) - metric.quality(images)).mean()
    out.update(seconds_per_image=seconds / len(images), queries_per_image=used / len(images), gain=float(gain))
    return out


class MetricTime:
    """Inside the block, the seconds the metric's calls take (``metric.quality``), summed in ``seconds``."""

    def __init__(self, metric: Any) -> None:
        self.metric, self.seconds = metric, 0.0

    def __enter__(self) -> MetricTime:
        quality = self.metric.quality

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return quality(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        self.metric.quality = timed  # an instance attribute: the class's method is untouched
        return self

    def __exit__(self, *exc: object) -> None:
        del self.metric.quality


def floor_seconds(run: dict[str, Any]) -> float:
    """The metric's best forward throughput around one of our runs, in seconds per image: per batch, the
    calls timed back to back before and after the attack pooled (:func:`iqa_robustness.bench.forward_throughput`;
    the machine's speed drifts during a run), then the fastest batch."""
    from iqa_robustness.bench import per_image

    before, after = run["throughput_before"], run["throughput_after"]
    pooled = {b: (s + after[b][0], n + after[b][1]) for b, (s, n) in before.items() if b in after}
    return min(per_image(pooled).values())


def median_floor_seconds(run: dict[str, Any]) -> float:
    """The stricter floor: per batch, the mean of the median calls taken before and after the attack
    (:func:`iqa_robustness.bench.forward_seconds`, 5 calls each), then the fastest batch. A median leaves out
    the pauses every call of a long run pays, and the fastest of nine noisy medians is lower still."""
    after = run.get("forward_after_s", run["forward_s"])
    return min((run["forward_s"][b] + after.get(b, run["forward_s"][b])) / 2 for b in run["forward_s"])


def as_batch(result: Any) -> torch.Tensor:
    """A source attack's result as a (1, 3, H, W) tensor (Square and NES return NumPy HWC arrays)."""
    if isinstance(result, torch.Tensor):
        return result.detach().cpu().reshape(1, *result.shape[-3:])
    array = torch.from_numpy(result)
    return array.reshape(1, *array.shape[-3:]).permute(0, 3, 1, 2)


class SourceModel(torch.nn.Module):
    """The source's metric interface around the suite's metric: ``model(x)`` gives raw scores, ``lower_better``
    orients them, ``model.model`` is the network (Patch-RS moves it); counts every image scored."""

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.model = metric
        self.lower_better = metric.lower_better
        self.scored = 0

    def forward(self, image: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        self.scored += image.shape[0]
        return self.model(image)


def summary(runs: list[dict[str, Any]], variants: list[str]) -> str:
    """The markdown table: per attack and variant, median [min-max] seconds per image, speed-up, efficiency."""

    def spread(values: list[float], unit: str = "") -> str:
        return f"{statistics.median(values):.3g}{unit} [{min(values):.3g}-{max(values):.3g}]"

    attacks = list(dict.fromkeys(r["attack"] for r in runs))
    header = ["attack", "queries/img", *(f"{v} s/img" for v in variants)]
    ours = [v for v in variants if v.startswith("ours")]
    compare = ours if "source" in variants else []
    header += [f"speed-up {v}" for v in compare]
    header += [f"efficiency {v}" for v in ours]
    header += [f"efficiency {v}, median floor" for v in ours]
    header += [f"in metric {v}" for v in ours]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for attack in attacks:
        mine = [r for r in runs if r["attack"] == attack]
        by_variant = {v: [r for r in mine if r["variant"] == v] for v in variants}
        queries = {v: statistics.median(r["queries_per_image"] for r in rs) for v, rs in by_variant.items() if rs}
        cells = [attack, " / ".join(f"{q:.0f}" for q in queries.values())]
        cells += [spread([r["seconds_per_image"] for r in by_variant[v]]) if by_variant[v] else "-" for v in variants]
        for v in compare:  # per repetition: the source's time over ours (queries per image alike)
            pairs = zip(by_variant["source"], by_variant[v], strict=False)
            ratios = [s["seconds_per_image"] / o["seconds_per_image"] for s, o in pairs]
            cells.append(spread(ratios, "x") if ratios else "-")
        for floor in (floor_seconds, median_floor_seconds):
            for v in ours:
                eff = [r["queries_per_image"] * floor(r) / r["seconds_per_image"] for r in by_variant[v]]
                cells.append(spread(eff) if eff else "-")
        for v in ours:
            share = [r["metric_seconds_per_image"] / r["seconds_per_image"] for r in by_variant[v]]
            cells.append(spread(share) if share else "-")
        lines.append("| " + " | ".join(cells) + " |")
    loads = [r["load"] for r in runs]
    lines.append("")
    lines.append(f"load average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f}; gains (mean q change):")
    for attack in attacks:
        gains = {
            v: statistics.median(r["gain"] for r in runs if r["attack"] == attack and r["variant"] == v)
            for v in variants
            if any(r["attack"] == attack and r["variant"] == v for r in runs)
        }
        lines.append(f"  {attack}: " + ", ".join(f"{v} {g:+.2f}" for v, g in gains.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, nargs="?", help="folder of a copy of adversarial-defenses-for-iqa")
    parser.add_argument("--weights-dir", default=os.environ.get("IQA_ROBUSTNESS_WEIGHTS"))
    parser.add_argument("--dataset", default="msu5")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--max-images", type=int, default=5)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--attacks", default=",".join(SOURCE_FOLDERS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--json", type=Path, default=None, help="also write every run as JSON lines here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(attacks) - set(SOURCE_FOLDERS)) + sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}: attacks are {', '.join(SOURCE_FOLDERS)}; variants {VARIANTS}")
    if any(v.startswith("source") for v in variants) and args.source is None:
        parser.error("give the folder of a copy of adversarial-defenses-for-iqa (or --variants ours,ours:single)")
    runs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(TQDM_DISABLE="1", OMP_NUM_THREADS=str(args.threads))
    for rep in range(args.repeats):
        for attack in attacks:
            for k in range(len(variants)):
                variant = variants[(k + rep) % len(variants)]  # each repetition starts with another variant
                job = {
                    "attack": attack,
                    "variant": variant,
                    "repetition": rep,
                    "source": str(args.source),
                    "weights_dir": args.weights_dir,
                    "dataset": args.dataset,
                    "image_size": args.image_size,
                    "max_images": args.max_images,
                    "queries": args.queries,
                    "threads": args.threads,
                    "device": args.device,
                }
                proc = subprocess.run(
                    [sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True, text=True
                )
                if proc.returncode != 0:
                    raise SystemExit(f"{attack} {variant} failed:\n{proc.stderr[-3000:]}")
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append(run)
                print(
                    f"{attack:13s} {variant:13s} rep {rep}: {run['seconds_per_image']:.3g} s/img, "
                    f"{run['queries_per_image']:.0f} queries/img, gain {run['gain']:+.2f}, load {run['load']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
                if args.json is not None:
                    with args.json.open("a") as fh:
                        fh.write(json.dumps(run) + "\n")
    print(summary(runs, variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
