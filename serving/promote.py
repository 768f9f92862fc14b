"""Champion/challenger promotion from the MLflow Model Registry into serving: ``make promote``.

    python -m serving.promote --model setnet --version 3 --alias champion
    python -m serving.promote --model setnet --version 4 --alias challenger
    python -m serving.promote --model setnet --rollback          # champion back to its previous version

A promotion sets the registry alias (``champion`` or ``challenger``) of a registered version and
materialises the serving base path from the registry:

- the version's SavedModel (the run artifact it was registered from) is downloaded into a hidden
  temporary folder beside the versions and renamed to the next integer version folder, so that a
  server polling the base path never sees it half-written; a registry version already there
  (``assets.extra/registry.json`` says which) is reused, not copied again;
- the model's entry in models.config is rewritten through a temporary file and a rename:
  ``version_labels`` ``stable`` -> the champion's folder and ``canary`` -> the challenger's (each
  falls back to the other while only one alias is set), and a ``specific`` version policy that
  loads exactly the labelled folders. The embedded server (``--model-config-file-poll-wait-seconds``)
  and TF Serving (``--model_config_file_poll_wait_seconds``) pick the change up without a restart.
  TF Serving refuses to move a label onto a version that is still loading; ``--server URL`` makes
  the promotion load the new folder first, wait until the server reports it AVAILABLE, and only
  then move the labels.

Every champion is remembered (registered-model tag ``serving.champion_history``), so
``--rollback`` moves ``champion`` back to the one before. A promotion refuses, with one line and
exit code 2 and without changing anything, a version that does not exist, a version whose
permutation-invariance check failed (version tag ``invariance.passed``, see
`pipelines.registry`), a registry it cannot reach, and a models.config it cannot read.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import time
import uuid
from typing import Callable

import pipelines  # noqa: F401  (its MLflow settings: telemetry off, before mlflow loads)
from pipelines.tracking_store import (TrackingStoreError, error_line, existing_store_uri, global_tracking_uri,
                                      safe_uri)

# Progress bars of artifact downloads would interleave with the one-line messages.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ALIASES = ("champion", "challenger")
LABEL_OF = {"champion": "stable", "challenger": "canary"}
HISTORY_TAG = "serving.champion_history"
MARKER = "registry.json"       # in <version folder>/assets.extra/: which registry version it is
TMP_PREFIX = ".tmp-promote-"
CONFIG_HEADER = ("# Rewritten by `python -m serving.promote` (make promote / make rollback): the label stable\n"
                 "# follows the registry alias champion, canary follows challenger; the version policy loads\n"
                 "# exactly the labelled versions.\n")


class PromoteError(Exception):
    """A refusal: what is wrong and what to do. Nothing was changed."""


# --------------------------------------------------------------------------- the registry


def connect(tracking_uri: str | None, runs_dir: str | pathlib.Path = "runs"):
    """(MlflowClient, uri) for the registry training registers into (same resolution as training)."""
    from mlflow import MlflowClient

    try:
        uri = existing_store_uri(tracking_uri, runs_dir)
    except TrackingStoreError as e:
        raise PromoteError(str(e)) from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:300]


def registered_model(client, uri: str, name: str):
    """The registered model, or a PromoteError: unknown name (listing those that exist) or unreachable."""
    from mlflow.exceptions import MlflowException, RestException

    try:
        return client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            try:
                names = sorted(m.name for m in client.search_registered_models()) or ["(none)"]
            except MlflowException:
                names = ["?"]
            raise PromoteError(f"the registry at {safe_uri(uri)} has no registered model {name!r} (registered: "
                               f"{', '.join(names)}); train with mlflow.registered_model={name} first") from None
        if isinstance(e, RestException):
            raise PromoteError(f"the registry at {safe_uri(uri)} refused the request: {error_line(e, uri, 300)}") \
                from None
        raise PromoteError(f"cannot reach the registry at {safe_uri(uri)}: {error_line(e, uri, 300)}; start the "
                           f"tracking server or pass --tracking-uri") from None
    except Exception as e:  # connection errors that MLflow does not wrap
        raise PromoteError(f"cannot reach the registry at {safe_uri(uri)}: {type(e).__name__}: "
                           f"{error_line(e, uri, 300)}") from None


def model_version(client, name: str, version: int | str):
    """The registered version, or a PromoteError naming the versions that exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            raise PromoteError(f"registered model {name!r} has no version {version} (versions: "
                               f"{', '.join(map(str, versions)) or 'none'})") from None
        raise PromoteError(f"cannot read version {version} of {name!r}: {_first_line(e)}") from None


def check_servable(mv) -> None:
    """Only versions whose export passed the permutation-invariance check may be served."""
    from pipelines.registry import INVARIANCE_PASSED

    passed = mv.tags.get(INVARIANCE_PASSED)
    if passed != "True":
        detail = (f"its invariance check failed (max deviation {mv.tags.get('invariance.max_abs_deviation', '?')})"
                  if passed is not None else f"it has no {INVARIANCE_PASSED} tag (not registered by training)")
        raise PromoteError(f"version {mv.version} of {mv.name!r} cannot be served: {detail}; promote a version "
                           f"whose export passed the check")


def champion_history(rm) -> list[int]:
    try:
        return [int(v) for v in json.loads(rm.tags.get(HISTORY_TAG, "[]"))]
    except (ValueError, TypeError):
        return []


# --------------------------------------------------------------------------- the base path


def served_folders(base: pathlib.Path, name: str) -> dict[int, int]:
    """{registry version: version folder} of what promotions put under ``base``."""
    out = {}
    if not base.is_dir():
        return out
    for folder in base.iterdir():
        marker = folder / "assets.extra" / MARKER
        if folder.name.isdigit() and marker.is_file():
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if info.get("model") == name:
                out[int(info["version"])] = int(folder.name)
    return out


def materialise(client, uri: str, mv, base: pathlib.Path) -> tuple[int, bool]:
    """(version folder, newly created?) holding registry version ``mv`` under ``base``."""
    import mlflow

    from pipelines.export import list_versions

    have = served_folders(base, mv.name).get(int(mv.version))
    if have is not None:
        return have, False
    base.mkdir(parents=True, exist_ok=True)
    scratch = base / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    scratch.mkdir()
    try:
        try:
            got = pathlib.Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(scratch),
                                                                   tracking_uri=uri))
        except Exception as e:
            raise PromoteError(f"cannot download version {mv.version} of {mv.name!r} from {mv.source}: "
                               f"{error_line(e, uri, 300)}") from None
        if not (got / "saved_model.pb").is_file():
            raise PromoteError(f"version {mv.version} of {mv.name!r} ({mv.source}) holds no saved_model.pb")
        (got / "assets.extra").mkdir(exist_ok=True)
        (got / "assets.extra" / MARKER).write_text(json.dumps(
            {"model": mv.name, "version": int(mv.version), "run_id": mv.run_id, "source": mv.source}, indent=1))
        for _ in range(100):
            versions = list_versions(base)
            target = base / str(versions[-1] + 1 if versions else 1)
            try:
                # A rename within one file system is atomic: servers see the whole version or none.
                os.rename(got, target)
                return int(target.name), True
            except OSError:
                if not target.exists():
                    raise
                # Another promotion took this number between our look and our rename: next one.
        raise PromoteError(f"could not find a free version folder under {base}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- models.config


def read_models_config(path: pathlib.Path):
    """(ModelServerConfig proto, the file's leading comment lines); a new config when missing."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    if not path.exists():
        return proto, ""
    try:
        text = path.read_text(encoding="utf-8")
        text_format.Parse(text, proto)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as e:
        raise PromoteError(f"{path}: not a readable TF Serving model config ({_first_line(e)}); fix it or pass "
                           f"--model-config-file") from None
    if proto.WhichOneof("config") not in (None, "model_config_list"):
        raise PromoteError(f"{path}: has no model_config_list; promotion edits model_config_list entries")
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return proto, "\n".join(header) + "\n" if header else ""


def labelled_config(proto, name: str, base: pathlib.Path, labels: dict[str, int], versions: set[int]):
    """A copy of ``proto`` whose entry ``name`` loads ``versions`` and carries ``labels``."""
    from tensorflow_serving.config import model_server_config_pb2

    out = model_server_config_pb2.ModelServerConfig()
    out.CopyFrom(proto)
    entries = [c for c in out.model_config_list.config if c.name == name]
    if entries:
        entry = entries[0]
    else:
        entry = out.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, str(base.resolve()), "tensorflow"
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(sorted(versions))
    entry.version_labels.clear()
    for label, folder in sorted(labels.items()):
        entry.version_labels[label] = folder
    return out


def write_models_config(path: pathlib.Path, proto, header: str) -> None:
    """Through a temporary file and a rename: a server re-reading it sees the old file or the new one."""
    from google.protobuf import text_format

    if CONFIG_HEADER not in header:
        header += CONFIG_HEADER
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(header + text_format.MessageToString(proto), encoding="utf-8")
    os.replace(tmp, path)


def current_labels(proto, name: str) -> dict[str, int]:
    for c in proto.model_config_list.config:
        if c.name == name:
            return dict(c.version_labels)
    return {}


def wait_available(server: str, name: str, folder: int, timeout: float = 180) -> None:
    """Until the server reports ``folder`` of ``name`` AVAILABLE (TF Serving's model status API)."""
    import httpx

    deadline = time.monotonic() + timeout
    url = f"{server.rstrip('/')}/v1/models/{name}/versions/{folder}"
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code == 200 and any(s.get("state") == "AVAILABLE"
                                            for s in r.json().get("model_version_status", [])):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not report AVAILABLE within {timeout:.0f} s")


# --------------------------------------------------------------------------- promote / rollback


def promote(name: str, version: int | None, alias: str, *, base_path, model_config_file, tracking_uri=None,
            runs_dir="runs", server: str | None = None, rollback: bool = False,
            printer: Callable[[str], None] = print) -> dict:
    """Set a registry alias and make the serving base path and models.config follow it.

    Args:
        name: registered model name (also the served model name in models.config).
        version: registered version (ignored for a rollback).
        alias: ``champion`` (label ``stable``) or ``challenger`` (label ``canary``).
        base_path: the served model's base path (integer version folders).
        model_config_file: the models.config to rewrite (created when missing).
        tracking_uri: the registry (default: $MLFLOW_TRACKING_URI, else the embedded store in ``runs_dir``).
        runs_dir: the configs' runs_dir (for the embedded store).
        server: a running server's REST URL: load the new folder first and move the labels once it is
            AVAILABLE there (what TF Serving needs).
        rollback: move ``champion`` back to its previous version instead.

    Returns:
        dict with ``version``, ``folder`` (its version folder), ``labels``, ``aliases``.

    Raises:
        PromoteError: the refusals listed in the module docstring; nothing was changed.

    Example (after `make sweep` registered versions 1 and 2)::

        promote("setnet", 1, "champion", base_path="exports/setnet", model_config_file="serving/models.config")
    """
    base, config_path = pathlib.Path(base_path), pathlib.Path(model_config_file)
    if alias not in ALIASES:
        raise PromoteError(f"alias must be one of {', '.join(ALIASES)}, got {alias!r}")
    client, uri = connect(tracking_uri, runs_dir)
    # MLflow's file registry reads versions through a client on the global tracking URI; pointed at
    # this registry, it does not create ./mlflow.db.
    with global_tracking_uri(uri):
        rm = registered_model(client, uri, name)
        aliases = {a: int(v) for a, v in (rm.aliases or {}).items()}
        history = champion_history(rm)
        if aliases.get("champion") is not None and (not history or history[-1] != aliases["champion"]):
            history.append(aliases["champion"])  # a champion set elsewhere (the MLflow UI) is remembered too
        if rollback:
            alias = "champion"
            while history and history[-1] == aliases.get("champion"):
                history.pop()
            if not history:
                raise PromoteError(f"{name!r} has no earlier champion to roll back to (champion: "
                                   f"{aliases.get('champion', 'none')})")
            version = history[-1]
        elif version is None:
            raise PromoteError("pass --version N (or --rollback)")
        mv = model_version(client, name, version)
        check_servable(mv)
        proto, header = read_models_config(config_path)
        new_aliases = {**aliases, alias: int(mv.version)}
        others = {a: model_version(client, name, v) for a, v in new_aliases.items() if a in ALIASES and a != alias}
        for other in others.values():
            check_servable(other)

        created: list[pathlib.Path] = []
        try:
            folders = {}
            for a, m in [(alias, mv), *others.items()]:
                folders[a], new = materialise(client, uri, m, base)
                if new:
                    created.append(base / str(folders[a]))
            try:
                client.set_registered_model_alias(name, alias, str(mv.version))
                if alias == "champion":
                    if not history or history[-1] != int(mv.version):
                        history.append(int(mv.version))
                    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
            except Exception as e:
                raise PromoteError(f"cannot set alias {alias} of {name!r} in the registry at {safe_uri(uri)}: "
                                   f"{error_line(e, uri, 300)}") from None
        except BaseException:
            for folder in created:  # a refusal leaves the base path as it was
                shutil.rmtree(folder, ignore_errors=True)
            raise

        labels = {LABEL_OF[a]: f for a, f in folders.items()}
        labels.setdefault("stable", labels.get("canary"))
        labels.setdefault("canary", labels.get("stable"))
        if server:
            # TF Serving moves a label only onto a loaded version: load the new folders next to the
            # labelled ones first, then move the labels.
            old = current_labels(proto, name)
            write_models_config(config_path, labelled_config(proto, name, base, old,
                                                             set(old.values()) | set(labels.values())), header)
            for folder in sorted(set(labels.values())):
                try:
                    wait_available(server, name, folder)
                except TimeoutError as e:
                    raise PromoteError(f"{e}; the registry alias is set and the folder is in {config_path}, but the "
                                       f"labels were not moved: run the same command again once the server loads it")
        write_models_config(config_path, labelled_config(proto, name, base, labels, set(labels.values())), header)
        verb = "rolled back" if rollback else "promoted"
        printer(f"{verb}: {name} version {mv.version} is {alias} -> {base / str(folders[alias])} "
                f"(label {LABEL_OF[alias]}); {config_path}: "
                + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
        return {"version": int(mv.version), "folder": folders[alias], "labels": labels,
                "aliases": new_aliases}


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.promote", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="setnet", help="registered (and served) model name (default: %(default)s)")
    p.add_argument("--version", type=int, default=None, help="registered version to promote")
    p.add_argument("--alias", default="champion", choices=ALIASES, help="champion (label stable) or challenger "
                                                                        "(label canary); default: %(default)s")
    p.add_argument("--rollback", action="store_true", help="move champion back to its previous version")
    p.add_argument("--base-path", default=None, help="the served model's base path (default: exports/<model>)")
    p.add_argument("--model-config-file", default=None,
                   help="models.config to rewrite (default: models.config beside the base path, as TF "
                        "Serving's /models/models.config beside /models/<model>; created when missing)")
    p.add_argument("--tracking-uri", default=None, help="the registry (default: $MLFLOW_TRACKING_URI, else "
                                                        "sqlite:///<runs-dir>/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", help="the configs' runs_dir (default: %(default)s)")
    p.add_argument("--server", default=None, help="REST URL of a running server: wait until it loaded the new "
                                                  "version before moving labels (needed by TF Serving)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        base_path = pathlib.Path(args.base_path or f"exports/{args.model}")
        promote(args.model, args.version, args.alias, base_path=base_path,
                model_config_file=args.model_config_file or base_path.parent / "models.config", tracking_uri=args.tracking_uri, runs_dir=args.runs_dir,
                server=args.server, rollback=args.rollback)
    except PromoteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
