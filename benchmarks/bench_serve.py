"""Load benchmark of the embedded server, REST and gRPC, against calling the SavedModel in process.

    make bench-serve                                    # 16 clients, 30 s per measurement
    python -m benchmarks.bench_serve --duration 5 --clients 16
    python -m benchmarks.bench_serve --model-base-path exports/setnet-default
    python -m benchmarks.bench_serve --apis grpc --duration 10

For 1 and for 32 clouds of 1024 points per request, it measures requests/s, clouds/s and
p50/p99 latency with one client and with `--clients` concurrent clients, over REST (the
embedded server in its own process on 127.0.0.1, row format, keep-alive connections),
over gRPC (the same server process, TF Serving's PredictionService stub, tensor_content,
one channel and connection per client) and in process (the same SavedModel signature
called from as many threads). The ratios say what each API costs: latency API/in-process
(goals at batch 32: REST <= 2x, gRPC <= 1.3x) and throughput in-process/API. Errors must
be 0. Requests are encoded once up front, so client work is only the transport; the
clients still share this machine's cores with the server, which is part of the figure on
a small shared machine.

Batching rows: a second server process started with `--enable_batching` (TF Serving's
batching parameters: `--batch-size-limit`, `--batch-timeout-micros`, `--batch-threads`)
answers `--clients` concurrent clients sending batch-1 requests; the summary compares
its throughput and p99 with the unbatched server's at the same load (goal: >= 3x the
unbatched REST throughput). `--no-batching` skips them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _model_for_bench(num_classes: int):
    """setnet's default classifier, untrained: the figures measure serving, not accuracy."""
    from setnet.models import build_classifier
    return build_classifier({"num_classes": num_classes}), "setnet.models default classifier"


def _percentile(values, q):
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def _run_threads(worker, clients: int, duration: float):
    """Runs `worker()` in `clients` threads until `duration` seconds pass; each call returns
    True (ok) or False (error). Returns (latencies, errors, seconds)."""
    latencies, errors = [], [0]
    lock = threading.Lock()
    stop = time.monotonic() + duration

    def loop():
        mine, bad = [], 0
        while time.monotonic() < stop:
            t = time.perf_counter()
            ok = worker()
            dt = time.perf_counter() - t
            if ok:
                mine.append(dt)
            else:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    start = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.monotonic() - start


def _row(mode, batch, clients, latencies, errors, seconds):
    n = len(latencies)
    return {"mode": mode, "batch": batch, "clients": clients, "requests": n, "errors": errors,
            "req_per_s": n / seconds, "clouds_per_s": n * batch / seconds,
            "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99)}


def _api_workers(apis, url, target, name, clouds, want):
    """(label, worker) per API for one request of `clouds`; each worker sends it once and
    returns whether the answer had the expected classes. Each client thread keeps its own
    keep-alive connection or gRPC channel."""
    import grpc
    import httpx
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from serving.client import _encode, make_http_client

    body = _encode({"instances": clouds.astype(np.float64)})
    local = threading.local()

    def rest():
        if not hasattr(local, "http"):
            local.http = make_http_client(120)
        try:
            r = local.http.post(url, content=body, headers={"Content-Type": "application/json"})
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and [p["class_id"] for p in r.json()["predictions"]] == want

    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(clouds))

    def grpc_predict():
        if not hasattr(local, "stub"):
            # A local subchannel pool gives each client its own connection, as each REST
            # client has its own keep-alive connection.
            channel = grpc.insecure_channel(target, options=[
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1)])
            local.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            r = local.stub.Predict(request, timeout=120)
        except grpc.RpcError:
            return False
        return list(r.outputs["class_id"].int64_val) == want

    return [(label, fn) for api, label, fn in (("rest", "REST", rest), ("grpc", "gRPC",
                                                                        grpc_predict))
            if api in apis]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16, help="concurrent clients")
    p.add_argument("--duration", type=float, default=30.0,
                   help="seconds per concurrent measurement")
    p.add_argument("--single-duration", type=float, default=None,
                   help="seconds per one-client measurement (default: duration / 3)")
    p.add_argument("--batches", default="1,32", help="clouds per request, comma-separated")
    p.add_argument("--points", type=int, default=1024, help="points per cloud")
    p.add_argument("--apis", default="rest,grpc",
                   help="APIs to measure besides in-process: rest, grpc, comma-separated")
    p.add_argument("--no-batching", action="store_true",
                   help="skip the rows of the server with --enable_batching")
    p.add_argument("--batch-size-limit", type=int, default=32,
                   help="batching: max_batch_size (clouds per model call)")
    # 0 and one thread measured best on the 2-core development machine: a batch thread
    # that waits for a batch to fill, or a second one running the model, takes the CPU
    # that parsing the requests needs (docs/serving.md).
    p.add_argument("--batch-timeout-micros", type=int, default=0,
                   help="batching: batch_timeout_micros (how long a batch waits to fill)")
    p.add_argument("--batch-threads", type=int, default=1,
                   help="batching: num_batch_threads")
    p.add_argument("--model-base-path", help="serve this export (highest version) instead of "
                                              "a freshly built model")
    p.add_argument("--num-classes", type=int, default=40)
    p.add_argument("--json", default=str(ROOT / "runs" / "bench" / "serve.json"),
                   help="also write the table here")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    apis = [a.strip().lower() for a in args.apis.split(",") if a.strip()]
    if not apis or set(apis) - {"rest", "grpc"}:
        print(f"error: --apis takes rest and/or grpc (comma-separated), got {args.apis!r}",
              file=sys.stderr)
        return 2
    single = args.single_duration or max(2.0, args.duration / 3)
    for flag in ("batch_size_limit", "batch_threads"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if args.batch_timeout_micros < 0:
        print("error: --batch-timeout-micros must be >= 0", file=sys.stderr)
        return 2

    import tensorflow as tf

    from pipelines.export import export_model, list_versions
    from serving.server.process import ServerProcess

    tmp = tempfile.TemporaryDirectory()
    if args.model_base_path:
        base = pathlib.Path(args.model_base_path)
        versions = list_versions(base)
        if not versions:
            print(f"error: no versions under {base}", file=sys.stderr)
            return 2
        version_dir, what = base / str(versions[-1]), f"export {base}/{versions[-1]}"
    else:
        model, what = _model_for_bench(args.num_classes)
        version_dir = export_model(model, tmp.name, "bench",
                                   [f"class_{i}" for i in range(args.num_classes)])
        base = version_dir.parent
    name = base.name

    args_server = ["--model-name", name, "--model-base-path", str(base), "--max-inflight", "1024",
                   "--max-batch-size", str(max(batches)), "--file-system-poll-wait-seconds", "0",
                   "--log-level", "warning"]
    with ServerProcess(args_server, tmp.name) as server:
        try:
            url = server.wait_ready(timeout=300) + f"/v1/models/{name}:predict"
            target = server.grpc_target
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

        sig = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        rng = np.random.default_rng(0)
        rows = []
        print(f"model: {what}; {args.points} points per cloud; server {url}, gRPC {target}",
              flush=True)
        for batch in batches:
            clouds = rng.normal(size=(batch, args.points, 3)).astype(np.float32)
            tensor = tf.constant(clouds)
            want = sig(points=tensor)["class_id"].numpy().tolist()
            sig(points=tensor)  # warm

            def in_process():
                sig(points=tensor)["probabilities"].numpy()
                return True

            workers = [("in-process", in_process)] + _api_workers(
                apis, url, target, name, clouds, want)
            for _, fn in workers[1:]:
                fn()  # warm the server's path for this shape
            for clients, seconds in ((1, single), (args.clients, args.duration)):
                for mode, worker in workers:
                    row = _row(mode, batch, clients, *_run_threads(worker, clients, seconds))
                    rows.append(row)
                    print(f"  {mode:<10} batch {batch:>3} clients {clients:>3}: "
                          f"{row['req_per_s']:8.1f} req/s  p50 {row['p50_ms']:8.2f} ms  "
                          f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}", flush=True)

    batched_rows = []
    if not args.no_batching:
        params = pathlib.Path(tmp.name) / "batching.config"
        params.write_text(f"max_batch_size {{ value: {args.batch_size_limit} }}\n"
                          f"batch_timeout_micros {{ value: {args.batch_timeout_micros} }}\n"
                          f"num_batch_threads {{ value: {args.batch_threads} }}\n"
                          f"max_enqueued_batches {{ value: 1000 }}\n")
        work = pathlib.Path(tmp.name) / "batched"
        work.mkdir()
        with ServerProcess(args_server + ["--enable_batching", "--batching_parameters_file",
                                          str(params)], work) as server:
            try:
                url = server.wait_ready(timeout=300) + f"/v1/models/{name}:predict"
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print(f"batching server {url}: max_batch_size {args.batch_size_limit}, "
                  f"batch_timeout_micros {args.batch_timeout_micros}, num_batch_threads "
                  f"{args.batch_threads}", flush=True)
            clouds = rng.normal(size=(1, args.points, 3)).astype(np.float32)
            want = sig(points=tf.constant(clouds))["class_id"].numpy().tolist()
            for mode, worker in _api_workers(apis, url, server.grpc_target, name, clouds, want):
                worker()
                row = _row(mode + "+batching", 1, args.clients,
                           *_run_threads(worker, args.clients, args.duration))
                batched_rows.append(row)
                print(f"  {row['mode']:<15} batch   1 clients {args.clients:>3}: "
                      f"{row['req_per_s']:8.1f} req/s  p50 {row['p50_ms']:8.2f} ms  "
                      f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}", flush=True)
        rows += batched_rows

    print()
    print(f"{'batch':>5} {'clients':>7} {'mode':<13} {'req/s':>8} {'clouds/s':>9} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for r in rows:
        print(f"{r['batch']:>5} {r['clients']:>7} {r['mode']:<13} {r['req_per_s']:>8.1f} "
              f"{r['clouds_per_s']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>6}")
    print()
    print(f"{'batch':>5} {'clients':>7} {'api':<5} {'p50 api/in-process':>19} "
          f"{'p99 api/in-process':>19} {'throughput in-process/api':>26}")
    ratios = []
    served = [mode for mode, _ in workers[1:]]
    for batch in batches:
        for clients in sorted({r["clients"] for r in rows}):
            local_row = next(r for r in rows if r["mode"] == "in-process" and r["batch"] == batch
                             and r["clients"] == clients)
            for mode in served:
                api_row = next(r for r in rows if r["mode"] == mode and r["batch"] == batch
                               and r["clients"] == clients)
                ratio = {"mode": mode, "batch": batch, "clients": clients,
                         "p50_ratio": api_row["p50_ms"] / local_row["p50_ms"],
                         "p99_ratio": api_row["p99_ms"] / local_row["p99_ms"],
                         "throughput_ratio": local_row["req_per_s"] / max(api_row["req_per_s"],
                                                                          1e-9)}
                ratios.append(ratio)
                print(f"{batch:>5} {clients:>7} {mode:<5} {ratio['p50_ratio']:>18.2f}x "
                      f"{ratio['p99_ratio']:>18.2f}x {ratio['throughput_ratio']:>25.2f}x")
    batching = []
    if batched_rows:
        print(f"\n{'api':<5} {'batch 1, clients':>16} {'batched req/s':>14} "
              f"{'unbatched req/s':>16} {'speed-up':>9} {'p99 batched ms':>15} "
              f"{'p99 unbatched ms':>17}")
        for row in batched_rows:
            mode = row["mode"].split("+")[0]
            plain = next((r for r in rows if r["mode"] == mode and r["batch"] == 1
                          and r["clients"] == args.clients), None)
            if plain is None:
                continue
            entry = {"mode": mode, "clients": args.clients,
                     "batched_req_per_s": row["req_per_s"],
                     "unbatched_req_per_s": plain["req_per_s"],
                     "speedup": row["req_per_s"] / max(plain["req_per_s"], 1e-9),
                     "batched_p99_ms": row["p99_ms"], "unbatched_p99_ms": plain["p99_ms"]}
            batching.append(entry)
            print(f"{mode:<5} {args.clients:>16} {entry['batched_req_per_s']:>14.1f} "
                  f"{entry['unbatched_req_per_s']:>16.1f} {entry['speedup']:>8.2f}x "
                  f"{entry['batched_p99_ms']:>15.2f} {entry['unbatched_p99_ms']:>17.2f}")
        print("(goal: REST with batching >= 3x the unbatched REST throughput)")
    errors = sum(r["errors"] for r in rows if r["mode"] != "in-process")
    print(f"\n{' and '.join(served)} errors (batched rows included): {errors} (must be 0). "
          f"Machine: {os.cpu_count()} "
          f"CPUs, shared with other work; timings vary with its load.")
    out = pathlib.Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": what, "points": args.points, "rows": rows,
                               "ratios": ratios, "batching": batching,
                               "errors": errors}, indent=2) + "\n")
    tmp.cleanup()
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
