"""The embedded server in a child process, for tests and benchmarks (`ServerProcess`)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
_PORT_FLAGS = ("--port", "--rest_api_port", "--rest-api-port")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it; another process may still take it first)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m serving.server ARGS` in a child process, as `make bench-serve` and the test suite run it.

    Starts at once (the child imports TensorFlow while the caller goes on) and logs to
    ``work_dir/server.log``. Unless ``ARGS`` name ``--port`` or ``--rest_api_port``, it serves
    REST and gRPC on free ports it picks (and picks again if another process took one before
    the child bound it). `wait_ready` returns the REST URL once the server answers; then
    `grpc_target` is its gRPC ``host:port``. Leaving the ``with`` block stops it.

    Args:
        args: flags of `python -m serving.server` (``--ready-file`` is added, and the ports
            unless given).
        work_dir: existing folder for ``ready.json`` and ``server.log``.
        env: extra environment variables for the child.

    Example (needs an export under exports/m)::

        with ServerProcess(["--model-name", "m", "--model-base-path", "exports/m"], work) as server:
            url = server.wait_ready()            # http://127.0.0.1:PORT
            target = server.grpc_target          # 127.0.0.1:PORT
    """

    def __init__(self, args: list[str], work_dir, env: dict | None = None):
        work_dir = pathlib.Path(work_dir)
        self.args, self.env = list(args), env
        self.ready_file, self.log_path = work_dir / "ready.json", work_dir / "server.log"
        self.pick_ports = not any(a.split("=")[0] in _PORT_FLAGS for a in self.args)
        host_at = [i for i, a in enumerate(self.args) if a == "--host"]
        self.host = self.args[host_at[-1] + 1] if host_at else "127.0.0.1"
        self.url: str | None = None
        self.grpc_target: str | None = None
        self._start()

    def _start(self) -> None:
        import subprocess

        ports = (["--port", str(free_port(self.host)), "--rest_api_port",
                  str(free_port(self.host))] if self.pick_ports else [])
        self.ready_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "serving.server", *self.args, *ports,
               "--ready-file", str(self.ready_file)]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                              **(self.env or {})})

    def wait_ready(self, timeout: float = 240) -> str | None:
        """The server's REST URL (None if it serves gRPC only) once it answers; RuntimeError with its log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        retries = 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log_path.read_text()
                # Another process may take a picked port between the pick and the bind.
                if self.pick_ports and retries and "cannot listen on" in log:
                    retries -= 1
                    self._start()
                    continue
                raise RuntimeError(f"the embedded server exited ({self.proc.returncode}):\n"
                                   f"{log[-3000:]}")
            if self.ready_file.exists():
                ready = json.loads(self.ready_file.read_text())
                self.url, self.grpc_target = ready["url"], ready.get("grpc")
                return self.url
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
