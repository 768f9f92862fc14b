"""`python -m serving.server`: parse the flags, load the models, listen, serve REST and gRPC.

    python -m serving.server --model-name setnet --model-base-path exports/setnet
    python -m serving.server --model-config-file serving/models.config --rest_api_port 8501 --port 8500

`--port` is gRPC (PredictionService, ModelService; default 8500) and `--rest_api_port` REST
(default 8501), as in `tensorflow_model_server`; both are served by this one process from
the same loaded models, gRPC from a `grpc.server` thread pool beside uvicorn.

Bad flags or config files end with one `error: ...` line and exit code 2. See docs/serving.md.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import pathlib
import signal
import socket
import sys
import threading

from serving.server.app import create_app
from serving.server.batching import Batcher, BatchingOptions, load_batching_parameters
from serving.server.config import Limits, build_parser, check_ports, configs_from_args
from serving.server.errors import ConfigError
from serving.server.memory import limit_malloc_arenas
from serving.server.metrics import DEFAULT_PATH as DEFAULT_METRICS_PATH
from serving.server.metrics import Metrics, load_monitoring_config
from serving.server.servable import LoadedVersion
from serving.server.versions import ModelRegistry

log = logging.getLogger("serving.server")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Before TensorFlow starts its threads, each of which could get a malloc arena.
    limit_malloc_arenas()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_ports(args)
        configs = configs_from_args(args)
        limits = Limits(args.max_points, args.max_batch_size, args.max_body_bytes,
                        args.max_inflight)
        for field, value in dataclasses.asdict(limits).items():
            if value < 1:
                raise ConfigError(f"--{field.replace('_', '-')} must be >= 1, got {value}")
        metrics_path = (load_monitoring_config(args.monitoring_config_file)
                        if args.monitoring_config_file else None)
        if args.batching_parameters_file and not args.enable_batching:
            raise ConfigError("--batching_parameters_file is set without --enable_batching "
                              "(tensorflow_model_server refuses this too); add "
                              "--enable_batching")
        batching = None
        if args.enable_batching:
            batching = (load_batching_parameters(args.batching_parameters_file)
                        if args.batching_parameters_file else BatchingOptions())
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from tensorflow_serving.apis import get_model_status_pb2  # noqa: F401
    except ImportError:
        print("error: the tensorflow-serving-api protos are missing; run `make install` or "
              "`pip install --no-deps 'tensorflow-serving-api>=2.21,<2.22'`", file=sys.stderr)
        return 2

    metrics = Metrics() if metrics_path else None
    if metrics is not None and not args.rest_api_port:
        log.warning("--monitoring_config_file turns Prometheus on, but its page is served on "
                    "the REST port and --rest_api_port is 0")
    batcher = Batcher(batching, metrics) if batching else None
    registry = ModelRegistry(configs, poll_seconds=args.file_system_poll_wait_seconds,
                             config_file=args.model_config_file,
                             config_poll_seconds=args.model_config_file_poll_wait_seconds,
                             on_load=gc.freeze,
                             loader=batcher.loader(LoadedVersion) if batcher else LoadedVersion)
    # Bind both ports before loading, so that a port in use is reported at once and not
    # after minutes of loading; neither API answers before the models are loaded.
    rest_sock = None
    if args.rest_api_port:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only
        # for sockets that say so, and without it keep-alive answers wait ~40 ms on delayed
        # ACKs.
        rest_sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET,
                                  socket.SOCK_STREAM, socket.IPPROTO_TCP)
        rest_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            rest_sock.bind((args.host, args.rest_api_port))
        except OSError as err:
            print(f"error: cannot listen on {args.host}:{args.rest_api_port} for REST: "
                  f"{err.strerror}; pick another --rest_api_port", file=sys.stderr)
            return 2
    from serving.server.grpc_service import create_grpc_server

    host = f"[{args.host}]" if ":" in args.host else args.host
    addresses = ([f"{host}:{args.port}"] if args.port else []) + (
        [f"unix:{args.grpc_socket_path}"] if args.grpc_socket_path else [])
    try:
        grpc_server, grpc_ports = create_grpc_server(registry, limits, addresses,
                                                     args.grpc_max_threads, metrics=metrics)
    except OSError as err:
        print(f"error: {err} for gRPC; pick another --port", file=sys.stderr)
        return 2
    rest_url = f"http://{host}:{rest_sock.getsockname()[1]}" if rest_sock else None
    grpc_target = f"{host}:{grpc_ports[0]}" if args.port else None

    # Like TF Serving, load what is there before answering requests.
    registry.poll_once()
    # A JSON batch of clouds is ~30k small lists; with TensorFlow's ~400k long-lived objects
    # in the heap, the collections those allocations trigger cost 3-4x the parse itself.
    # Freezing the loaded objects (again after every load) and collecting the young
    # generation less often removes that; nothing here makes many reference cycles.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)

    # Both APIs stop on SIGINT/SIGTERM: uvicorn handles the signal while it runs and then
    # hands it on to this handler, which also ends the wait of a gRPC-only server.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    grpc_server.start()
    registry.start()
    server = None
    if rest_sock is not None:
        import uvicorn

        app = create_app(registry, limits, manage_registry=False,
                         cors=args.rest_api_enable_cors_support, metrics=metrics,
                         metrics_path=metrics_path or DEFAULT_METRICS_PATH)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               lifespan="on", timeout_graceful_shutdown=5))

    def announce():
        while server is not None and not server.started:
            if stop.wait(0.05):
                return
        for c in configs:
            log.info("serving model %s from %s (policy %s, labels %s)", c.name, c.base_path,
                     ":".join(map(str, c.policy)), c.labels or "none")
        apis = ([f"REST on {rest_url} (e.g. curl {rest_url}/v1/models/{configs[0].name})"]
                if rest_url else []) + ([f"gRPC on {grpc_target}"] if grpc_target else []) + (
            [f"gRPC on unix:{args.grpc_socket_path}"] if args.grpc_socket_path else []) + (
            [f"Prometheus metrics on {rest_url}{metrics_path}"] if metrics and rest_url else [])
        print("serving " + ", ".join(apis), flush=True)
        if args.ready_file:
            tmp = pathlib.Path(args.ready_file + ".tmp")
            tmp.write_text(json.dumps({"url": rest_url, "grpc": grpc_target,
                                       "pid": os.getpid()}))
            os.replace(tmp, args.ready_file)

    threading.Thread(target=announce, daemon=True).start()
    try:
        if server is not None:
            server.run(sockets=[rest_sock])
        else:
            stop.wait()
    finally:
        stop.set()
        grpc_server.stop(grace=5).wait()
        registry.stop()
        if batcher is not None:
            batcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
