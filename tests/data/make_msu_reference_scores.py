"""Regenerate ``msu_reference_scores.json`` with the MSU benchmark's own scoring code.

Runs ``robustness_benchmark/score_methods.py`` and ``interface.py``'s ``collect_results`` and
``evaluate_robustness`` (github.com/msu-video-group/MSU_Metrics_Robustness_Benchmark) unchanged on
the shared per-image results ``data/msu/results/*_maniqa_test.csv``. Needs pandas 1.x (the code
uses ``DataFrame.append``) and scikit-learn, which the project itself does not depend on::

    python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install "pandas==1.5.3" "numpy<2" scipy scikit-learn
    /tmp/refvenv/bin/python tests/data/make_msu_reference_scores.py BENCHMARK_CHECKOUT SHARED_DIR

``BENCHMARK_CHECKOUT`` holds ``robustness_benchmark/``; only its two scoring files are executed
(``interface.py``'s top level imports torch and cv2, so just its two functions are taken).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import scipy.stats as st
import sklearn

HERE = Path(__file__).resolve().parent
ATTACK_GROUPS_BY_DATASET = (
    "all", "iterative", "uap", "ifgsm", "mifgsm", "amifgsm", "std-fgsm", "korhonen-et-al", "madc",
    "default-uap_COCO_amp0.2",
)  # fmt: skip


def load_benchmark(checkout: Path) -> dict:
    pkg = checkout / "robustness_benchmark"
    spec = importlib.util.spec_from_file_location("score_methods", pkg / "score_methods.py")
    score_methods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score_methods)
    ns = {
        "pd": pd,
        "np": np,
        "st": st,
        "Path": Path,
        "method_name_to_func": score_methods.method_name_to_func,
    }
    tree = ast.parse((pkg / "interface.py").read_text())
    wanted = {"uap_default_config", "collect_results", "evaluate_robustness"}
    for node in tree.body:
        names = {node.name} if isinstance(node, ast.FunctionDef) else set()
        if isinstance(node, ast.Assign):
            names = {getattr(t, "id", "") for t in node.targets}
        if names & wanted:
            exec(compile(ast.Module([node], []), "interface.py", "exec"), ns)
    return ns


def dump(ref: dict) -> str:
    """JSON with one group per line: short, and its diffs stay readable."""

    def groups(recs: dict, pad: str) -> str:
        return ",\n".join(f"{pad}{json.dumps(k)}: {json.dumps(v)}" for k, v in recs.items())

    head = ",\n".join(f" {json.dumps(k)}: {json.dumps(ref[k])}" for k in ("_comment", "commit", "metric"))
    by_ds = ",\n".join(f"  {json.dumps(ds)}: {{\n{groups(g, '   ')}\n  }}" for ds, g in ref["by_dataset"].items())
    body = groups(ref["groups"], "  ")
    return f'{{\n{head},\n "groups": {{\n{body}\n }},\n "by_dataset": {{\n{by_ds}\n }}\n}}\n'


def main(checkout: Path, shared: Path) -> None:
    warnings.simplefilter("ignore")
    ns = load_benchmark(checkout)
    methods = list(ns["method_name_to_func"])
    with tempfile.TemporaryDirectory() as tmp:
        # collect_results reads <save_dir>/<attack>/<metric>.csv
        for csv_file in sorted((shared / "data" / "msu" / "results").glob("*_maniqa_test.csv")):
            attack = csv_file.name.removesuffix("_maniqa_test.csv")
            (Path(tmp) / attack).mkdir()
            (Path(tmp) / attack / "maniqa.csv").symlink_to(csv_file)
        df = ns["collect_results"](tmp, {"name": "maniqa"})

    def evaluate(frame: pd.DataFrame, attacks: list[str]) -> dict:
        res = ns["evaluate_robustness"](frame, attacks=attacks, metrics=["maniqa"], raw_values=True, methods=methods)
        is_uap = frame.attack.str.contains("uap", regex=False)
        sizes = {"all": len(frame), "iterative": int((~is_uap).sum()), "uap": int(is_uap.sum())}
        out = {}
        for _, row in res.iterrows():
            n = sizes.get(row.attack, int((frame.attack == row.attack).sum()))
            out[row.attack] = {
                "n": n,
                **{k: float(row[k]) for k in res.columns if k not in ("metric", "attack")},
            }
        return out

    groups = evaluate(df, ["all", "iterative", "uap", *df.attack.unique()])
    for attack in ("cumulative-uap", "generative-uap", "default-uap"):  # every train set and amplitude pooled
        pooled = df[df.attack.str.startswith(attack + "_")].assign(attack=attack)
        groups.update(evaluate(pooled, [attack]))
    renamed = df.assign(dataset=df.dataset.replace({"NIPS2017": "NIPS"}))  # as demo_scoring.ipynb
    by_dataset = {
        ds: evaluate(renamed[renamed.dataset == ds], list(ATTACK_GROUPS_BY_DATASET))
        for ds in sorted(renamed.dataset.unique())
    }
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    ref = {
        "_comment": (
            "Reference scores produced by the MSU Metrics Robustness Benchmark's own scoring code "
            "(robustness_benchmark/score_methods.py with interface.py collect_results + "
            "evaluate_robustness, raw_values=True; "
            f"github.com/msu-video-group/MSU_Metrics_Robustness_Benchmark at commit {commit}; "
            f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}, scipy {scipy.__version__}) on "
            "data/msu/results/*_maniqa_test.csv. Pooled universal groups ('cumulative-uap', ...) and "
            "by_dataset groups are the same evaluate_robustness on row subsets; by_dataset renames "
            "NIPS2017 to NIPS as the benchmark's demo_scoring.ipynb does. "
            "Regenerate with make_msu_reference_scores.py."
        ),
        "commit": commit,
        "metric": "maniqa",
        "groups": groups,
        "by_dataset": by_dataset,
    }
    (HERE / "msu_reference_scores.json").write_text(dump(ref))
    print(f"{len(groups)} groups, by dataset {sorted(by_dataset)} -> {HERE / 'msu_reference_scores.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
