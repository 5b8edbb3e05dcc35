"""Continuous integration of the robustness grid: the GitLab child pipeline and what a change runs.

:mod:`iqa_robustness.ci.changes` tells which metrics' chains a change touches (each metric's own
files, read from the metric registry and its modules' imports); :mod:`iqa_robustness.ci.gitlab`
writes their chains as a GitLab child pipeline. ``docs/ci.md`` describes the pipeline, the CI/CD
component and GitHub workflow for a metric's own repository, and Slurm and Kubernetes runs.
"""
