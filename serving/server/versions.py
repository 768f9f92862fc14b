"""Which versions of which models are loaded, and picking up changes without a restart.

`ServableManager` applies one model's version policy (latest N, all, specific) to the
integer folders under its base path, loads new versions in the background and unloads
versions no longer aspired once a replacement is available, as TF Serving's
availability-preserving policy does. `ModelRegistry` holds one manager per model and a
thread that polls the base paths (`--file-system-poll-wait-seconds`) and re-reads the
models.config file (`--model-config-file-poll-wait-seconds`), so models, labels and
policies change on the fly too.

Example (needs an export under exports/setnet-default)::

    registry = ModelRegistry([ModelConfig("setnet", "exports/setnet-default")])
    registry.poll_once()            # loads what is there now
    registry.get("setnet").resolve(None, None).version   # the highest loaded version
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import threading
import time
from typing import Callable

from serving.server.config import ModelConfig, load_model_config_file
from serving.server.errors import ConfigError, ServingError, invalid
from serving.server.servable import LoadedVersion

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VersionState:
    state: str                 # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def _ready_versions(base: pathlib.Path) -> dict[int, pathlib.Path]:
    """Integer-named subfolders that hold a saved_model.pb (others are ignored, as TF
    Serving ignores non-numeric names such as the exporter's hidden temp folders)."""
    if not base.is_dir():
        return {}
    out = {}
    for p in base.iterdir():
        if p.name.isdigit() and (p / "saved_model.pb").is_file():
            out[int(p.name)] = p
    return out


class ServableManager:
    """Versions of one model: which to load, loading them, and which answers a request.

    Loading never blocks requests: the version map is replaced, not mutated, so a request
    holds on to the version it resolved even while a newer one loads or an older one is
    unloaded (availability-preserving, as TF Serving's default policy).
    """

    def __init__(self, config: ModelConfig,
                 loader: Callable[[str, int, pathlib.Path], LoadedVersion] = LoadedVersion,
                 on_load: Callable[[], None] | None = None):
        self.config = config
        self.loader = loader
        self.on_load = on_load
        self.available: dict[int, LoadedVersion] = {}
        self.states: dict[int, VersionState] = {}
        self._failed: dict[int, float] = {}   # version -> mtime of the saved_model.pb that failed
        self._lock = threading.Lock()
        self._warned_missing = False

    @property
    def name(self) -> str:
        return self.config.name

    def aspired(self, found: dict[int, pathlib.Path]) -> set[int]:
        kind = self.config.policy[0]
        if kind == "all":
            return set(found)
        if kind == "specific":
            return set(self.config.policy[1]) & set(found)
        return set(sorted(found)[-self.config.policy[1]:])

    def poll(self) -> None:
        """Loads new aspired versions (newest first), then unloads versions no longer aspired."""
        base = pathlib.Path(self.config.base_path)
        found = _ready_versions(base)
        if not found and not self.available and not self._warned_missing:
            log.warning("no versions of servable %s found under base path %s", self.name, base)
            self._warned_missing = True
        aspired = self.aspired(found)
        for version in sorted(aspired - set(self.available), reverse=True):
            mtime = (found[version] / "saved_model.pb").stat().st_mtime
            if self._failed.get(version) == mtime:
                continue  # failed before and unchanged on disk: do not retry in a loop
            self._load(version, found[version], mtime)
        loaded_aspired = aspired & set(self.available)
        # Keep serving what we have until at least one aspired version is available.
        if loaded_aspired:
            for version in sorted(set(self.available) - aspired):
                self._unload(version)

    def _load(self, version: int, path: pathlib.Path, mtime: float) -> None:
        with self._lock:
            self.states[version] = VersionState("LOADING")
        start = time.monotonic()
        try:
            servable = self.loader(self.name, version, path)
        except Exception as err:  # a bad version must not take the server down
            log.error("loading servable %s version %d from %s failed: %s", self.name, version,
                      path, err)
            with self._lock:
                self.states[version] = VersionState("END", "UNKNOWN",
                                                    f"Failed to load version {version} from "
                                                    f"{path}: {err}")
                self._failed[version] = mtime
            return
        with self._lock:
            self.available = {**self.available, version: servable}
            self.states[version] = VersionState("AVAILABLE")
            self._failed.pop(version, None)
        log.info("servable %s version %d AVAILABLE (loaded in %.1f s)", self.name, version,
                 time.monotonic() - start)
        if self.on_load is not None:
            self.on_load()

    def _unload(self, version: int) -> None:
        with self._lock:
            self.states[version] = VersionState("UNLOADING")
            self.available = {k: v for k, v in self.available.items() if k != version}
            self.states[version] = VersionState("END")
        log.info("servable %s version %d unloaded", self.name, version)

    def resolve(self, version: int | None, label: str | None) -> LoadedVersion:
        """The servable a request names, or TF Serving's error for it."""
        if label is not None:
            if label not in self.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        available = self.available
        if version is not None:
            if version in available:
                return available[version]
            # Also while that version loads, as TF Serving answers.
            raise ServingError("NOT_FOUND", f"Servable not found for request: "
                               f"Specific({self.name}, {version})")
        if available:
            return available[max(available)]
        # TF Serving answers NOT_FOUND here too, but it opens no port before its first
        # load; this answer lets a client wait for a model that starts after the server.
        if any(s.state == "LOADING" for s in self.states.values()):
            raise ServingError("UNAVAILABLE", f"Model {self.name} has no version available "
                               f"yet: a version is loading; retry shortly.",
                               {"Retry-After": "1"})
        raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")

    def status(self, version: int | None, label: str | None) -> list[tuple[int, VersionState]]:
        if label is not None:
            if label not in self.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        with self._lock:
            states = dict(self.states)
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model "
                                   f"{self.name}")
            return [(version, states[version])]
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {self.name}")
        return sorted(states.items(), reverse=True)


class ModelRegistry:
    """All served models, and the thread that polls their base paths.

    Args:
        configs: one `ModelConfig` per model.
        poll_seconds: how often `start`'s thread looks for new versions (0: never).
        config_file: the models.config to re-read (None: the configs never change).
        config_poll_seconds: how often to re-read `config_file` (0: never).
        loader: `(name, version, path) -> LoadedVersion`; tests pass a fake.
        on_load: called after each version loads (the CLI passes `gc.freeze`).
    """

    def __init__(self, configs: list[ModelConfig], *, poll_seconds: float = 1.0,
                 config_file: str | None = None, config_poll_seconds: float = 0.0,
                 loader=LoadedVersion, on_load: Callable[[], None] | None = None):
        self.loader = loader
        self.on_load = on_load
        self.managers = {c.name: ServableManager(c, loader, on_load) for c in configs}
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ServableManager | None:
        return self.managers.get(name)

    def poll_once(self) -> None:
        for manager in list(self.managers.values()):
            try:
                manager.poll()
            except Exception:  # keep polling the others; the next poll tries again
                log.exception("polling %s failed", manager.name)

    def reload_config(self) -> None:
        try:
            configs = load_model_config_file(self.config_file)
        except ConfigError as err:
            log.error("keeping the current model config: %s", err)
            return
        new = {c.name: c for c in configs}
        for name, config in new.items():
            if name in self.managers:
                self.managers[name].config = config
            else:
                log.info("model %s added by the config file", name)
                self.managers = {**self.managers,
                                 name: ServableManager(config, self.loader, self.on_load)}
        for name in set(self.managers) - set(new):
            log.info("model %s removed by the config file; unloading it", name)
            manager = self.managers[name]
            for version in list(manager.available):
                manager._unload(version)
            self.managers = {k: v for k, v in self.managers.items() if k != name}

    def start(self) -> None:
        if self._thread is not None or (self.poll_seconds <= 0 and self.config_poll_seconds <= 0):
            return
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_config = time.monotonic()
        interval = min(x for x in (self.poll_seconds, self.config_poll_seconds) if x > 0)
        while not self._stop.wait(interval):
            if (self.config_file and self.config_poll_seconds > 0
                    and time.monotonic() - last_config >= self.config_poll_seconds):
                last_config = time.monotonic()
                self.reload_config()
            if self.poll_seconds > 0:
                self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
