"""The embedded server in a child process, for tests and benchmarks (`ServerProcess`)."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


class ServerProcess:
    """`python -m serving.server ARGS` in a child process, as `make bench-serve` and the test suite run it.

    Starts at once (the child imports TensorFlow while the caller goes on), listens where ``ARGS``
    say (``--port 0`` picks a free port), logs to ``work_dir/server.log``; `wait_ready` returns its
    URL once it serves; leaving the ``with`` block stops it.

    Args:
        args: flags of `python -m serving.server` (``--ready-file`` is added).
        work_dir: existing folder for ``ready.json`` and ``server.log``.
        env: extra environment variables for the child.

    Example (needs an export under exports/m)::

        with ServerProcess(["--model-name", "m", "--model-base-path", "exports/m", "--port", "0"], work) as server:
            url = server.wait_ready()
    """

    def __init__(self, args: list[str], work_dir, env: dict | None = None):
        import subprocess

        work_dir = pathlib.Path(work_dir)
        self.ready_file, self.log_path = work_dir / "ready.json", work_dir / "server.log"
        cmd = [sys.executable, "-m", "serving.server", *args, "--ready-file", str(self.ready_file)]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})

    def wait_ready(self, timeout: float = 240) -> str:
        """The server's base URL once it accepts requests; RuntimeError with its log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the embedded server exited ({self.proc.returncode}):\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            if self.ready_file.exists():
                return json.loads(self.ready_file.read_text())["url"]
            time.sleep(0.1)
        raise RuntimeError(f"the embedded server did not start in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
