"""`python -m serving.server`: parse the flags, load the models, listen, serve.

    python -m serving.server --model-name setnet --model-base-path exports/setnet --port 8501
    python -m serving.server --model-config-file serving/models.config --port 0 --ready-file ready.json

Bad flags or config files end with one `error: ...` line and exit code 2. See docs/serving.md.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import pathlib
import socket
import sys
import threading
import time

from serving.server.app import create_app
from serving.server.config import Limits, build_parser, configs_from_args
from serving.server.errors import ConfigError
from serving.server.versions import ModelRegistry

log = logging.getLogger("serving.server")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        configs = configs_from_args(args)
        limits = Limits(args.max_points, args.max_batch_size, args.max_body_bytes,
                        args.max_inflight)
        for field, value in dataclasses.asdict(limits).items():
            if value < 1:
                raise ConfigError(f"--{field.replace('_', '-')} must be >= 1, got {value}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from tensorflow_serving.apis import get_model_status_pb2  # noqa: F401
    except ImportError:
        print("error: the tensorflow-serving-api protos are missing; run `make install` or "
              "`pip install --no-deps 'tensorflow-serving-api>=2.21,<2.22'`", file=sys.stderr)
        return 2

    import uvicorn

    registry = ModelRegistry(configs, poll_seconds=args.file_system_poll_wait_seconds,
                             config_file=args.model_config_file,
                             config_poll_seconds=args.model_config_file_poll_wait_seconds,
                             on_load=gc.freeze)
    # Like TF Serving, load what is there before accepting requests.
    registry.poll_once()
    # A JSON batch of clouds is ~30k small lists; with TensorFlow's ~400k long-lived objects
    # in the heap, the collections those allocations trigger cost 3-4x the parse itself.
    # Freezing the loaded objects (again after every load) and collecting the young
    # generation less often removes that; nothing here makes many reference cycles.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say so, and without it keep-alive answers wait ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}; pick another "
              f"--port (0 picks a free one)", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    url = f"http://{args.host}:{port}"
    app = create_app(registry, limits)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def announce():
        while not server.started:
            time.sleep(0.05)
        for c in configs:
            log.info("serving model %s from %s (policy %s, labels %s)", c.name, c.base_path,
                     ":".join(map(str, c.policy)), c.labels or "none")
        print(f"serving on {url}  (e.g. curl {url}/v1/models/{configs[0].name})", flush=True)
        if args.ready_file:
            tmp = pathlib.Path(args.ready_file + ".tmp")
            tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
            os.replace(tmp, args.ready_file)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
