"""MLflow: session and case runs, and reading them back for ``compare`` and ``leaderboard``."""
