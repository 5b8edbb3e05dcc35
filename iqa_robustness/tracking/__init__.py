"""MLflow: one parent run per session, one nested run per case, and reading them back.

:mod:`.store` (the client and MLflow's limits), :mod:`.tags`, :mod:`.cases`, :mod:`.session`
(writing), :mod:`.query` (reading, for ``compare`` and ``leaderboard``). The names below are the
package's public API.
"""

from iqa_robustness.tracking.cases import case_metrics, case_params, case_tags, logged_case, plot_case
from iqa_robustness.tracking.query import (
    LoggedCase,
    describe_session,
    download_case_files,
    find_session,
    load_case_rows,
    load_session_cases,
)
from iqa_robustness.tracking.session import (
    FAILED,
    FINISHED,
    KILLED,
    SessionLogger,
    log_session,
    result_tags,
    session_status,
)
from iqa_robustness.tracking.store import (
    KIND_CASE,
    KIND_SESSION,
    KIND_SHARD,
    PARAM_VALUE_LIMIT,
    TrackingError,
    default_artifact_location,
    ensure_experiment,
    open_client,
)
from iqa_robustness.tracking.tags import session_tags

__all__ = [
    "FAILED",
    "FINISHED",
    "KILLED",
    "KIND_CASE",
    "KIND_SESSION",
    "KIND_SHARD",
    "PARAM_VALUE_LIMIT",
    "LoggedCase",
    "SessionLogger",
    "TrackingError",
    "case_metrics",
    "case_params",
    "case_tags",
    "default_artifact_location",
    "describe_session",
    "download_case_files",
    "ensure_experiment",
    "find_session",
    "load_case_rows",
    "load_session_cases",
    "log_session",
    "logged_case",
    "open_client",
    "plot_case",
    "result_tags",
    "session_status",
    "session_tags",
]
