"""REST client for TF Serving (and the embedded server): point-cloud files in, classes out.

    python -m serving.client predict --url http://127.0.0.1:8501 --model setnet chair.off cloud.npy
    python -m serving.client status                 # defaults: http://127.0.0.1:8501, setnet
    python -m serving.client metadata --url http://127.0.0.1:8501 --model setnet --version 2
    python -m serving.client predict --grpc cloud.npy   # gRPC, default 127.0.0.1:8500

`--grpc` uses `serving.grpc_client.GrpcServingClient` (TF Serving's gRPC API) instead;
everything else, the output included, stays the same.

In Python:

>>> client = ServingClient("http://127.0.0.1:8501", "setnet")           # doctest: +SKIP
>>> out = client.predict(clouds)        # list of (N_i, 3) arrays or an array (B, N, 3)  # doctest: +SKIP
>>> out["class_id"], out["probabilities"]                                # doctest: +SKIP

Clouds of one size go to `serving_default` in TF Serving's row format; clouds of
different sizes are padded and sent with a mask to `serving_masked`. Large inputs are
split into requests of `batch_size` clouds. 503 (unavailable, e.g. a version still
loading) and 429 (busy) answers, timeouts and refused connections are retried with
exponential backoff (and the server's Retry-After); other errors are raised at once as
`ServingClientError` with the server's message. Nothing here needs TensorFlow (the gRPC
client does). Files are read by `serving.clouds`; what this client shares with the gRPC
one (retries, batches, padding) is in `serving.base_client`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Callable

import numpy as np
import orjson

from serving.base_client import (BaseClient, RetryableFailure, ServingClientError,
                                 check_rows, cloud_batches, join_outputs, no_answer,
                                 padded_batches, unreachable)
from serving.clouds import CloudFileError, features_of, load_clouds

__all__ = ["ServingClient", "main", "make_http_client"]

RETRY_STATUS = (429, 503)


def _encode(value) -> bytes:
    # Clouds travel as float64 arrays: float32 -> float64 is exact and the shortest float64
    # repr round-trips, so the server parses back exactly the float32 values given (as a
    # float32 array .tolist() would, only faster). orjson would write NaN and Inf as null,
    # so bodies with those go through json, which writes NaN/Infinity as TF Serving reads them.
    if _all_finite(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return json.dumps(value, separators=(",", ":"), allow_nan=True,
                      default=lambda a: a.tolist()).encode("utf-8")


def _all_finite(value) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind not in "fc" or bool(np.isfinite(value).all())
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    if isinstance(value, float):
        return np.isfinite(value)
    return True


def make_http_client(timeout: float = 30.0):
    """An httpx client with TCP_NODELAY: a request's headers and body go out as separate
    writes, and without it the body can wait for the server's delayed ACK (tens of ms)."""
    import socket

    import httpx
    transport = httpx.HTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(timeout=timeout, transport=transport)


class ServingClient(BaseClient):
    """Client for one model on a TF Serving REST endpoint.

    Args:
        url: server root, e.g. `http://127.0.0.1:8501`.
        model_name: model name in the URLs.
        version: pin a version (`/versions/N`); default: the server's choice (highest).
        label: pin a version label (`/labels/L`) instead.
        timeout: seconds per HTTP request.
        retries: extra attempts after a 503, 429, timeout or refused connection.
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped at
            `max_backoff`; a larger Retry-After from the server wins.
        batch_size: most clouds per request.
        http: an `httpx.Client` to use (tests pass one with a mock transport).
    """

    def __init__(self, url: str, model_name: str, *, version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.25, max_backoff: float = 8.0, batch_size: int = 32,
                 http=None, sleep: Callable[[float], None] = time.sleep):
        super().__init__(model_name, version=version, label=label, timeout=timeout,
                         retries=retries, backoff=backoff, max_backoff=max_backoff,
                         batch_size=batch_size, sleep=sleep)
        self.url = url.rstrip("/")
        self.http = http or make_http_client(timeout)
        self._output_names: dict = {}  # (signature, version, label) -> its output names

    # -- plumbing -----------------------------------------------------------------------

    def model_path(self, version: int | None = None, label: str | None = None) -> str:
        version, label = self.pinned(version, label)
        path = f"/v1/models/{self.model_name}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{label}"
        return path

    def request(self, method: str, path: str, body: bytes | None = None) -> dict:
        """One API call with retries; returns the parsed JSON answer."""
        import httpx

        url = self.url + path

        def once(attempts: int) -> dict:
            try:
                response = self.http.request(
                    method, url, content=body, timeout=self.timeout,
                    headers={"Content-Type": "application/json"} if body is not None else None)
            except httpx.TimeoutException as err:
                raise RetryableFailure(no_answer(self.timeout, attempts, url,
                                                 detail=f" ({type(err).__name__})")) from err
            except httpx.TransportError as err:
                raise RetryableFailure(unreachable(attempts, err, self.url, url)) from err
            if response.status_code >= 400:
                try:
                    message = response.json().get("error", response.text)
                except ValueError:
                    message = response.text or response.reason_phrase
                error = ServingClientError(response.status_code, message, url)
                if response.status_code in RETRY_STATUS:
                    raise RetryableFailure(error, response.headers.get("retry-after"))
                raise error
            try:
                return response.json()
            except ValueError as err:
                raise ServingClientError(response.status_code,
                                         f"the answer is not JSON: {response.text[:200]!r}",
                                         url) from err

        return self.with_retries(once)

    # -- API ----------------------------------------------------------------------------

    def status(self, version: int | None = None, label: str | None = None) -> dict:
        """GET /v1/models/NAME[/versions/N|/labels/L]: the model_version_status list."""
        return self.request("GET", self.model_path(version, label))

    def metadata(self, version: int | None = None, label: str | None = None) -> dict:
        """GET .../metadata: model_spec and the signature defs."""
        return self.request("GET", self.model_path(version, label) + "/metadata")

    def predict_json(self, body: dict, version: int | None = None,
                     label: str | None = None) -> dict:
        """POST any TF Serving predict body (row or columnar) and return the answer."""
        return self.request("POST", self.model_path(version, label) + ":predict", _encode(body))

    def predict(self, clouds, *, signature_name: str | None = None, columnar: bool = False,
                masked: bool | None = None, version: int | None = None,
                label: str | None = None) -> dict[str, np.ndarray]:
        """Predicts clouds, in requests of at most `batch_size` clouds.

        Args:
            clouds: array `(B, N, 3)` or a list of `(N_i, 3)` arrays.
            signature_name: default `serving_default`, or `serving_masked` when padding.
            columnar: send `{"inputs": ...}` instead of `{"instances": ...}`.
            masked: pad and send a mask (default: only when the clouds differ in size).
            version, label: pin a version for this call.

        Returns:
            dict of output name -> array with one row per cloud, in the order given
            (`probabilities` (B, K) and `class_id` (B,) for setnet exports).
        """
        return join_outputs([self._predict_arrays(inputs, name, columnar, version, label)
                             for inputs, name in cloud_batches(clouds, self.batch_size, masked,
                                                               signature_name)])

    def predict_padded(self, points, mask, *, columnar: bool = False,
                       signature_name: str = "serving_masked", version: int | None = None,
                       label: str | None = None) -> dict[str, np.ndarray]:
        """Sends already padded clouds `points (B, N, 3)` with their `mask (B, N)` as given
        (in requests of `batch_size`)."""
        return join_outputs([self._predict_arrays(inputs, signature_name, columnar, version,
                                                  label)
                             for inputs in padded_batches(points, mask, self.batch_size)])

    def _predict_arrays(self, inputs: dict, signature_name: str | None, columnar: bool,
                        version, label) -> dict[str, np.ndarray]:
        body = _predict_body(inputs, signature_name, columnar)
        out = _parse_outputs(self.predict_json(body, version, label), len(inputs["points"]))
        return self._named(out, signature_name, version, label)

    def _named(self, out: dict, signature: str | None, version, label) -> dict:
        """A single-output answer by its output's name: TF Serving's row format gives a model
        with one output (a regressor's `prediction`) as bare values, which `_parse_outputs` can
        only call "output"; the signature's metadata names it (read once)."""
        if set(out) != {"output"}:
            return out
        key = (signature or "serving_default", version, label)
        if key not in self._output_names:
            try:
                sigs = self.metadata(version, label)["metadata"]["signature_def"]["signature_def"]
                self._output_names[key] = sorted(sigs[key[0]]["outputs"])
            except (ServingClientError, KeyError, TypeError):
                self._output_names[key] = []
        names = self._output_names[key]
        return {names[0]: out["output"]} if len(names) == 1 else out


def _predict_body(inputs: dict, signature_name: str | None, columnar: bool) -> dict:
    """A predict body for one batch of input arrays (a single input travels bare, as TF
    Serving's formats allow; several by name)."""
    # float32 -> float64 is exact, and float64's shortest repr reads back as the same float32.
    values = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}
    body = {} if signature_name is None else {"signature_name": signature_name}
    if len(values) == 1:
        body["inputs" if columnar else "instances"] = next(iter(values.values()))
    elif columnar:
        body["inputs"] = values
    else:
        body["instances"] = [dict(zip(values, row)) for row in zip(*values.values())]
    return body


def _parse_outputs(answer: dict, count: int) -> dict[str, np.ndarray]:
    if "predictions" in answer:
        rows = answer["predictions"]
        if rows and isinstance(rows[0], dict):
            out = {k: np.asarray([r[k] for r in rows]) for k in rows[0]}
        else:
            out = {"output": np.asarray(rows)}
    elif "outputs" in answer:
        outputs = answer["outputs"]
        out = ({k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict)
               else {"output": np.asarray(outputs)})
    else:
        raise ServingClientError(200, f"the answer has neither 'predictions' nor 'outputs': "
                                 f"{str(answer)[:200]}")
    check_rows(out, count, status=200)
    if "probabilities" in out:
        out["probabilities"] = out["probabilities"].astype(np.float32)
    return out


# ----------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.client",
                                description="Talk to a TF Serving REST endpoint.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--url", help="server root URL (default http://127.0.0.1:8501), or "
                                       "with --grpc the gRPC host:port (default "
                                       "127.0.0.1:8500)")
        sp.add_argument("--grpc", action="store_true",
                        help="use TF Serving's gRPC API instead of REST")
        sp.add_argument("--model", default="setnet",
                        help="model name (default: setnet, the name make serve and "
                             "make serve-docker serve)")
        pin = sp.add_mutually_exclusive_group()
        pin.add_argument("--version", type=int, help="pin a version")
        pin.add_argument("--label", help="pin a version label")
        sp.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        sp.add_argument("--retries", type=int, default=4, help="retries on 503/429/timeouts")

    pr = sub.add_parser("predict", help="classify point-cloud files")
    common(pr)
    pr.add_argument("files", nargs="+", help=".npy .txt .csv .xyz .pts .h5 .hdf5 .off")
    pr.add_argument("--batch-size", type=int, default=32, help="clouds per request")
    pr.add_argument("--num-points", type=int, help="at most this many points per cloud "
                                                   "(and the sample size for .off meshes)")
    pr.add_argument("--sample", choices=("first", "random"), default="first")
    pr.add_argument("--normalize", action="store_true",
                    help="centre and scale each cloud into the unit sphere")
    pr.add_argument("--h5-key", help="HDF5 dataset (default: data)")
    pr.add_argument("--signature", help="signature name (default: serving_default, or "
                                        "serving_masked for clouds of different sizes)")
    pr.add_argument("--columnar", action="store_true", help="send {'inputs': ...}")
    pr.add_argument("--class-names", help="file with one class name a line (an export's "
                                          "assets/class_names.txt)")
    pr.add_argument("--top-k", type=int, default=1, help="classes to show per cloud")
    pr.add_argument("--json", help="also write the results to this JSON file")
    for name, help_ in (("status", "model version status"), ("metadata", "signature defs")):
        common(sub.add_parser(name, help=help_))
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    options = dict(version=args.version, label=args.label, timeout=args.timeout,
                   retries=args.retries, batch_size=getattr(args, "batch_size", 32))
    try:
        if args.grpc:
            if getattr(args, "columnar", False):
                raise ValueError("--columnar chooses a REST JSON format; gRPC sends tensors, "
                                 "drop one of --grpc and --columnar")
            from serving.grpc_client import GrpcServingClient
            client = GrpcServingClient(args.url or "127.0.0.1:8500", args.model, **options)
        else:
            client = ServingClient(args.url or "http://127.0.0.1:8501", args.model, **options)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if args.command == "status":
            print(json.dumps(client.status(), indent=2))
            return 0
        if args.command == "metadata":
            print(json.dumps(client.metadata(), indent=2))
            return 0
        names = None
        if args.class_names:
            try:
                names = pathlib.Path(args.class_names).read_text(encoding="utf-8").splitlines()
            except UnicodeDecodeError as err:
                raise CloudFileError(f"{args.class_names}: not UTF-8 text (byte {err.start}); "
                                     f"--class-names wants one class name a line, e.g. an "
                                     f"export's assets/class_names.txt") from err
        clouds = []
        for f in args.files:
            clouds += load_clouds(f, num_points=args.num_points, sample=args.sample,
                                  h5_key=args.h5_key, normalize=args.normalize, num_features=None)
        # The model's F (values per point) from its signature; 3 (x, y, z) if it does not say.
        width = features_of(client.metadata(), args.signature or "serving_default") or 3
        short = next(((label, c.shape[1]) for label, c in clouds if c.shape[1] < width), None)
        if short is not None:
            raise CloudFileError(f"{short[0]}: {short[1]} values per point, but the model takes {width} "
                                 f"(its signature's points input is [batch, N, {width}])")
        clouds = [(label, c[:, :width]) for label, c in clouds]
        out = client.predict([c for _, c in clouds], signature_name=args.signature,
                             **({} if args.grpc else {"columnar": args.columnar}))
    except (CloudFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ServingClientError as err:
        print(f"error: the server answered {err.status or 'nothing'}: {err.message}",
              file=sys.stderr)
        return 1
    probs = out.get("probabilities")
    results = []
    width = max(len(label) for label, _ in clouds)
    for i, (label, cloud) in enumerate(clouds):
        item = {"source": label, "points": int(len(cloud))}
        item.update({k: v[i].tolist() for k, v in out.items()})
        if probs is not None:
            top = np.argsort(-probs[i])[:max(1, args.top_k)]
            item["top"] = [{"class_id": int(k), "probability": float(probs[i, k]),
                            **({"class_name": names[k]} if names and k < len(names) else {})}
                           for k in top]
            shown = "  ".join(f"{t.get('class_name', t['class_id'])} {t['probability']:.3f}"
                              for t in item["top"])
        else:
            shown = json.dumps({k: v[i].tolist() for k, v in out.items()})[:120]
        print(f"{label:<{width}}  {len(cloud):>6} pts  {shown}")
        results.append(item)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
