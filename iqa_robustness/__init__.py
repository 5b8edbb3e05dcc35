"""iqa-robustness: can this quality metric be fooled?

Adversarial robustness tests for image and video quality metrics, as a pytest plugin. The
sub-packages follow the data flow, each importing only those below it (checked by import-linter):

- :mod:`iqa_robustness.metrics`: the metric registry, adapters and weights;
- :mod:`iqa_robustness.attacks`: one attack per module, hyperparameters as frozen dataclasses;
- :mod:`iqa_robustness.data`: image and video datasets;
- :mod:`iqa_robustness.scores`: the benchmark's scores and the MSU CSV format;
- :mod:`iqa_robustness.runner`: the grid and the case runners;
- :mod:`iqa_robustness.report`, :mod:`iqa_robustness.tracking`, :mod:`iqa_robustness.bench`:
  summaries and baselines, MLflow, speed measurements;
- :mod:`iqa_robustness.cli`, :mod:`iqa_robustness.plugin`: the ``iqa-robustness`` command and
  the pytest plugin; :mod:`iqa_robustness.robustness_tests` holds the grid's test modules.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("iqa-robustness")
except _metadata.PackageNotFoundError:  # imported from a checkout that is not installed
    __version__ = "0+unknown"
