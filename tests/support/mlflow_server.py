"""A real `mlflow server` on loopback for the tracking, sweep and promotion tests."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
import urllib.request

from serving.server.process import free_port


class MlflowServer:
    """`mlflow server` in its own process group (so that a kill takes its workers too), started with
    the command line `make mlflow-ui` uses (`pipelines.compare.server_command`): SQLite backend,
    proxied artifacts under ``root``, one worker, job execution off.

    Args:
        root: folder for the store (``server.db``), the artifacts and ``server.log``.
        port: TCP port on 127.0.0.1 (default: a free one).

    Example::

        server = MlflowServer(tmp_path)
        server.start()
        ...  # MlflowClient(server.uri)
        server.kill()
    """

    def __init__(self, root: pathlib.Path, port: int | None = None):
        self.root, self.port = pathlib.Path(root), port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 180):
        from pipelines.compare import server_command, server_env

        command = server_command(f"sqlite:///{self.root / 'server.db'}", self.root, port=self.port)
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(command, cwd=self.root, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while True:
            assert self.proc.poll() is None, f"mlflow server exited:\n{(self.root / 'server.log').read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.time() < deadline, "mlflow server did not come up"
            time.sleep(0.5)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
