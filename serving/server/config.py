"""What to serve and with which limits: TF Serving's models.config, the CLI flags, `Limits`.

`load_model_config_file` reads a text-format `ModelServerConfig` (the file
`tensorflow_model_server --model_config_file` reads, e.g. serving/models.config);
`build_parser` defines the flags (TF Serving's spellings are accepted too, with its
meanings: `--port` is gRPC, `--rest_api_port` REST), `check_ports` checks the listening
flags and `configs_from_args` combines file and flags into one `ModelConfig` per model.

Example:

>>> args = build_parser().parse_args(["--model-name", "m", "--model-base-path", "/tmp/m",
...                                   "--version-label", "stable=1"])
>>> [(c.name, c.policy, c.labels) for c in configs_from_args(args)]
[('m', ('latest', 1), {'stable': 1})]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib

from serving.server.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelConfig:
    """One served model: TF Serving's ModelConfig, the fields this server uses."""

    name: str
    base_path: str
    policy: tuple = ("latest", 1)  # ("latest", n) | ("all",) | ("specific", (v, ...))
    labels: dict = dataclasses.field(default_factory=dict)


def parse_policy(text: str) -> tuple:
    """`latest`, `latest:N`, `all` or `specific:V1,V2` (the flag form of a version policy)."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "latest":
            n = int(arg) if arg else 1
            if n < 1:
                raise ValueError
            return ("latest", n)
        if kind == "all" and not arg:
            return ("all",)
        if kind == "specific" and arg:
            return ("specific", tuple(sorted(int(v) for v in arg.split(","))))
    except ValueError:
        pass
    raise ConfigError(f"bad version policy {text!r}: use latest, latest:N (N >= 1), all, or "
                      f"specific:V1,V2")


def parse_labels(items) -> dict:
    labels = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise ConfigError(f"bad version label {item!r}: use LABEL=VERSION, e.g. stable=1")
        labels[name] = int(value)
    return labels


def load_model_config_file(path) -> list[ModelConfig]:
    """Reads a TF Serving models.config (text-format ModelServerConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read model config file {path}: {err.strerror}") from err
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a valid TF Serving model config ({err}). Expected "
                          f"model_config_list {{ config {{ name: '...' base_path: '...' }} }}; "
                          f"see serving/models.config") from err
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: no model_config_list; this server reads "
                          f"model_config_list {{ config {{ ... }} }} only")
    out, seen = [], set()
    for i, c in enumerate(proto.model_config_list.config):
        if not c.name or not c.base_path:
            raise ConfigError(f"{path}: config #{i + 1} needs both name and base_path")
        if c.name in seen:
            raise ConfigError(f"{path}: model name {c.name!r} appears twice")
        seen.add(c.name)
        if c.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {c.name!r} has model_platform "
                              f"{c.model_platform!r}; only 'tensorflow' is served")
        base = pathlib.Path(c.base_path)
        if not base.is_absolute():
            base = path.parent / base
        which = c.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            policy = ("all",)
        elif which == "specific":
            if not c.model_version_policy.specific.versions:
                raise ConfigError(f"{path}: model {c.name!r} has a specific version policy "
                                  f"with no versions")
            policy = ("specific", tuple(sorted(c.model_version_policy.specific.versions)))
        else:
            policy = ("latest", max(1, c.model_version_policy.latest.num_versions or 1))
        out.append(ModelConfig(c.name, str(base), policy, dict(c.version_labels)))
    if not out:
        raise ConfigError(f"{path}: the model_config_list is empty")
    return out


@dataclasses.dataclass
class Limits:
    """Per-request maxima the server enforces before a request reaches the model
    (flags `--max-points`, `--max-batch-size`, `--max-body-bytes`, `--max-inflight`)."""

    max_points: int = 65536
    max_batch_size: int = 512
    max_body_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 64


def flag_bool(text: str) -> bool:
    """A boolean flag's value as tensorflow_model_server reads it (`--flag`, `--flag=true`,
    `--flag=false`, 1 or 0)."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="TF-Serving-compatible REST and gRPC server for SavedModels under "
                    "BASE/<version>/.")
    p.add_argument("--model-name", "--model_name", help="model name in the URLs")
    p.add_argument("--model-base-path", "--model_base_path",
                   help="folder with one integer subfolder per version")
    p.add_argument("--model-config-file", "--model_config_file",
                   help="TF Serving models.config (text proto); replaces --model-name/"
                        "--model-base-path, or with them overrides that model's base path")
    p.add_argument("--model-config-file-poll-wait-seconds",
                   "--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read the config file this often (0: never)")
    # The ports mean what they mean to tensorflow_model_server: --port is gRPC and
    # --rest_api_port REST, 0 switches that API off. Only the REST default differs (TF
    # Serving's is 0, no REST), because REST is what this server is mostly used for.
    p.add_argument("--port", type=int, default=8500,
                   help="gRPC port (PredictionService, ModelService); 0: none, then give "
                        "--grpc_socket_path")
    p.add_argument("--grpc_socket_path", "--grpc-socket-path", default="",
                   help="also serve gRPC on this UNIX socket")
    p.add_argument("--rest_api_port", "--rest-api-port", type=int, default=8501,
                   help="REST port (0: no REST API)")
    p.add_argument("--grpc_max_threads", "--grpc-max-threads", type=int,
                   default=4 * (os.cpu_count() or 1),
                   help="gRPC worker threads (default: 4 per CPU, as TF Serving)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address both APIs listen on (TF Serving: all interfaces, 0.0.0.0)")
    p.add_argument("--version-policy", default=None,
                   help="latest (default), latest:N, all, specific:V1,V2")
    p.add_argument("--version-label", action="append", metavar="LABEL=VERSION",
                   help="version label, repeatable (or version_labels in the config file)")
    p.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                   type=float, default=1.0,
                   help="how often to look for new versions (0: only at start)")
    p.add_argument("--max-points", type=int, default=Limits.max_points,
                   help="most points per cloud")
    p.add_argument("--max-batch-size", type=int, default=Limits.max_batch_size,
                   help="most clouds per request")
    p.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes,
                   help="largest request body")
    p.add_argument("--max-inflight", type=int, default=Limits.max_inflight,
                   help="predict requests in progress before answering 429")
    p.add_argument("--rest_api_enable_cors_support", "--rest-api-enable-cors-support",
                   type=flag_bool, nargs="?", const=True, default=False, metavar="BOOL",
                   help="add CORS headers (Access-Control-Allow-Origin: *) to REST answers")
    p.add_argument("--monitoring_config_file", "--monitoring-config-file",
                   help="TF Serving MonitoringConfig (text proto): prometheus_config { enable: "
                        "true path: \"/monitoring/prometheus/metrics\" } serves Prometheus "
                        "metrics on the REST port")
    p.add_argument("--enable_batching", "--enable-batching", type=flag_bool, nargs="?",
                   const=True, default=False, metavar="BOOL",
                   help="merge concurrent predict calls of one model version, signature and "
                        "cloud size into one model call")
    p.add_argument("--batching_parameters_file", "--batching-parameters-file",
                   help="TF Serving BatchingParameters (text proto): max_batch_size, "
                        "batch_timeout_micros, num_batch_threads, max_enqueued_batches")
    p.add_argument("--ready-file", help="write {\"url\": ...} here once serving")
    p.add_argument("--log-level", default="info")
    return p


def check_ports(args) -> None:
    """The listening flags make sense together, or a `ConfigError` says what to change."""
    for flag, value in (("--port", args.port), ("--rest_api_port", args.rest_api_port)):
        if not 0 <= value <= 65535:
            raise ConfigError(f"{flag} must be a port number from 0 to 65535, got {value}")
    if args.port == 0 and not args.grpc_socket_path:
        raise ConfigError("--port 0 leaves gRPC without a port; give a --port (TF Serving's "
                          "8500) or a --grpc_socket_path")
    if args.port and args.port == args.rest_api_port:
        raise ConfigError(f"--port (gRPC) and --rest_api_port (REST) are both {args.port}; "
                          f"give them different ports (e.g. 8500 and 8501)")
    if args.grpc_max_threads < 1:
        raise ConfigError(f"--grpc_max_threads must be >= 1, got {args.grpc_max_threads}")


def configs_from_args(args) -> list[ModelConfig]:
    labels = parse_labels(args.version_label)
    policy = parse_policy(args.version_policy) if args.version_policy else None
    if args.model_config_file:
        configs = load_model_config_file(args.model_config_file)
        if args.model_base_path or args.model_name:
            if len(configs) != 1 and not args.model_name:
                raise ConfigError("--model-base-path with a multi-model config file needs "
                                  "--model-name to say which model it is for")
            target = [c for c in configs if not args.model_name or c.name == args.model_name]
            if not target:
                raise ConfigError(f"--model-name {args.model_name!r} is not in "
                                  f"{args.model_config_file} (models: "
                                  f"{', '.join(c.name for c in configs)})")
            if args.model_base_path:
                target[0].base_path = args.model_base_path
        for c in configs:
            c.labels.update(labels)
            if policy:
                c.policy = policy
    else:
        if not args.model_name or not args.model_base_path:
            raise ConfigError("give --model-name and --model-base-path, or "
                              "--model-config-file")
        configs = [ModelConfig(args.model_name, args.model_base_path, policy or ("latest", 1),
                               labels)]
    for c in configs:
        if not pathlib.Path(c.base_path).is_dir():
            log.warning("base path %s of model %s does not exist yet; waiting for versions",
                        c.base_path, c.name)
    return configs
