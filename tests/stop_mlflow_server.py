"""A pytest plugin for the session tests (``-p stop_mlflow_server``): an MLflow server that goes away mid-session.

Once the first grid case has ended, and after the suite's controller has logged it, the server
whose process group ``$STOP_MLFLOW_SERVER_PGID`` names is stopped, and the hook returns once its
port ``$STOP_MLFLOW_SERVER_PORT`` refuses connections: the rest of the session meets a server that is gone.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from iqa_robustness.plugin.session import CASE_PROPERTY

_stopped = False


@pytest.hookimpl(trylast=True)  # after the controller's hook, which logs the case
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _stopped
    if _stopped or report.when != "teardown" or CASE_PROPERTY not in dict(report.user_properties):
        return
    _stopped = True
    os.killpg(int(os.environ["STOP_MLFLOW_SERVER_PGID"]), signal.SIGTERM)
    port = int(os.environ["STOP_MLFLOW_SERVER_PORT"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the MLflow server on port {port} still answers 30 s after SIGTERM")
