"""A real MLflow tracking server for the tests: SQLite backend, served artefacts, a free port on 127.0.0.1.

It can be stopped and started again on the same port and store, as a server that goes away in the
middle of a session and comes back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: seconds a starting server gets to answer on a loaded machine
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_without_mlflow() -> dict[str, str]:
    """This process's environment without MLflow's variables (the tests set what they mean to)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # offline machines: no usage reports attempted
    return env


class MlflowServer:
    """``mlflow server`` in its own process group; :meth:`start` waits until it answers ``/health``.

    Attributes:
        root: its folder (``mlflow.db``, ``artifacts/``, ``server.log``).
        uri: ``http://127.0.0.1:<port>``.
        store_uri: the SQLite backend, for reading the store while the server is down.
    """

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.store_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.store_uri,
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        # The tracking API only: no background job runner (seven more processes to start and stop).
        env = {**env_without_mlflow(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log_path = self.root / "server.log"
        with log_path.open("a") as log_file:
            self.proc = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_SECONDS
        while not self.answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not answer on {self.uri} within {START_SECONDS} s")
            time.sleep(0.25)
        return self

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to its process group (SIGKILL after 15 s); returns once the port refuses connections."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None
        while self.answers():  # a worker of the group may outlive the master for a moment
            time.sleep(0.1)
