# setnet: two commands set everything up on a fresh machine: `make test` and `make train`.
# Both install into .venv on first use. TF=gpu installs tensorflow[and-cuda] instead of tensorflow-cpu.

PYTHON_BASE ?= python3.11
VENV        ?= .venv
TF          ?= cpu
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed-$(TF)
CONFIG      ?= configs/default.yaml
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED = 1

.PHONY: install test test-fast train bench bench-symmetry clean help

help:
	@echo "make test                 install on first use, then run the test suite"
	@echo "make train [CONFIG=...]   install on first use, then train (default: $(CONFIG)); ARGS=\"--set KEY=VALUE ...\" passes flags on"
	@echo "make bench                every benchmark table (bench-symmetry, ...)"
	@echo "make install [TF=gpu]     create $(VENV) and install setnet with its dependencies"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /make \1\t/' | expand -t 26

$(STAMP): pyproject.toml
	@command -v $(PYTHON_BASE) >/dev/null || { echo "error: $(PYTHON_BASE) not found; install Python 3.11 or run 'make PYTHON_BASE=python3.12 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(TF),train,serve,test,beam]'
	$(PY) -m pip install --quiet --no-deps 'tensorflow-serving-api>=2.21,<2.22'  # its TF pin would pull a second TensorFlow
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP)  ## the suite without the slow tests (processes, servers, whole training runs)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

train: $(STAMP)
	$(PY) -m pipelines.train --config $(CONFIG) $(ARGS)

bench: bench-symmetry bench-input bench-layers

bench-symmetry: $(STAMP)  ## orbit colors: engine time per group and map vs the null-space method (docs/symmetry.md)
	$(PY) -m benchmarks.bench_symmetry $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

.PHONY: spectral-example
spectral-example: $(STAMP)  ## C_16 network spectrum and frequency pruning, after Gibson, Tubbenhauer & Williamson (docs/spectral.md)
	$(PY) -m examples.spectral_pruning --out runs/spectral-example $(ARGS)

.PHONY: bench-input prepare
bench-input: $(STAMP)  ## input pipeline examples/s vs the default model's training step (docs/datasets.md)
	$(PY) -m benchmarks.bench_input $(ARGS)

prepare: $(STAMP)  ## make prepare DATASET=modelnet40 [ARGS="--manual-dir DIR --allow-partial"]
	$(PY) -m pipelines.prepare $(DATASET) $(ARGS)

.PHONY: bench-prepare
bench-prepare: $(STAMP)  ## set_table prepare of 10^5 and 10^6-point Parquet tables: sets/s and peak memory (docs/own-data.md)
	$(PY) -m benchmarks.bench_prepare $(ARGS)

.PHONY: bench-layers
bench-layers: $(STAMP)  ## equivariant layers: fwd+bwd time and peak memory vs TiedEquivariantDense and Dense (docs/layers.md)
	$(PY) -m benchmarks.bench_layers $(ARGS)

.PHONY: serve serve-docker bench-serve
EXPORTS    ?= exports
EXPORT     ?= setnet-default
SERVE_PORT ?= 8501
GRPC_PORT  ?= 8500
serve: $(STAMP)  ## embedded TF-Serving-compatible server on $(EXPORTS)/$(EXPORT) as model "setnet": REST $(SERVE_PORT), gRPC $(GRPC_PORT) (docs/serving.md)
ifeq ($(wildcard $(EXPORTS)/models.config),)
	@ls $(EXPORTS)/$(EXPORT)/[0-9]*/saved_model.pb >/dev/null 2>&1 || { echo "error: no exported model under $(EXPORTS)/$(EXPORT)/<version>/; run 'make train' first, or pick another folder under $(EXPORTS)/ with EXPORT=<name>"; exit 1; }
	$(PY) -m serving.server --model-config-file serving/models.config --model-base-path $(EXPORTS)/$(EXPORT) --rest_api_port $(SERVE_PORT) --port $(GRPC_PORT) $(ARGS)
else
	@echo "serving what make promote chose: $(EXPORTS)/models.config (re-read every 2 s; delete it to serve $(EXPORTS)/$(EXPORT) instead)"
	$(PY) -m serving.server --model-config-file $(EXPORTS)/models.config --model_config_file_poll_wait_seconds 2 --rest_api_port $(SERVE_PORT) --port $(GRPC_PORT) $(ARGS)
endif

serve-docker:  ## tensorflow/serving on $(EXPORTS)/$(EXPORT) with serving/models.config (docker-compose.yml; REST 8501, gRPC 8500)
	@ls $(EXPORTS)/$(EXPORT)/[0-9]*/saved_model.pb >/dev/null 2>&1 || { echo "error: no exported model under $(EXPORTS)/$(EXPORT)/<version>/; run 'make train' first, or pick another folder under $(EXPORTS)/ with EXPORT=<name>"; exit 1; }
	@command -v docker >/dev/null || { echo "error: docker not found; install Docker (with the compose plugin), or use 'make serve' for the embedded server"; exit 1; }
	SETNET_EXPORTS=$(abspath $(EXPORTS)) SETNET_EXPORT=$(EXPORT) SETNET_REST_PORT=$(SERVE_PORT) SETNET_GRPC_PORT=$(GRPC_PORT) docker compose -f docker-compose.yml up $(ARGS)

bench-serve: $(STAMP)  ## REST and gRPC (embedded server) vs in-process SavedModel: req/s, p50, p99 at batch 1 and 32, and batch 1 with --enable_batching (ARGS="--clients 16 --duration 30")
	$(PY) -m benchmarks.bench_serve $(ARGS)

.PHONY: bench-teleport
bench-teleport: $(STAMP)  ## symmetry teleportation vs plain training, SGD/AdaGrad/Adam x 3 seeds (docs/teleport.md)
	$(PY) -m examples.teleport_study $(ARGS)

.PHONY: bench-train bench-accuracy
bench-train: $(STAMP)  ## training clouds/s at 1024 points: setnet models vs PointNet (Keras BN and SetNormalization), XLA on/off, project loop vs keras fit (docs/training.md)
	$(PY) -m benchmarks.bench_train $(ARGS)

bench-accuracy: $(STAMP)  ## test accuracy, epochs, minutes, clouds/s: default, digits, ModelNet40 where present; ARGS="--pointnet --patience 10" (long)
	$(PY) -m benchmarks.bench_accuracy $(ARGS)

.PHONY: compare mlflow-ui
EXPERIMENT  ?=
MLFLOW_PORT ?= 5000
compare: $(STAMP)  ## runs of an experiment read through MLflow: table + PNG; make compare [EXPERIMENT=name] [PARENT=<sweep>] [ARGS="--params KEY"] (docs/tracking.md)
	$(PY) -m pipelines.compare $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(if $(PARENT),--parent $(PARENT)) $(ARGS)

mlflow-ui: $(STAMP)  ## the MLflow UI on the store training logs to: make mlflow-ui [MLFLOW_PORT=5000] (docs/tracking.md)
	$(PY) -m pipelines.compare --ui --port $(MLFLOW_PORT) $(ARGS)

.PHONY: sweep promote rollback
SWEEP   ?= sweeps/default.yaml
MODEL   ?= setnet
VERSION ?=
ALIAS   ?= champion
sweep: $(STAMP)  ## Optuna sweep of CONFIG over SWEEP, trials as child MLflow runs; ARGS="--trials N --parallel K --set KEY=VALUE" (docs/tracking.md)
	$(PY) -m pipelines.sweep --config $(CONFIG) --sweep $(SWEEP) $(ARGS)

promote: $(STAMP)  ## MODEL=setnet VERSION=n ALIAS=champion|challenger: registry alias -> exports/<MODEL>/<n> + models.config labels (docs/tracking.md)
	$(PY) -m serving.promote --model $(MODEL) $(if $(VERSION),--version $(VERSION)) --alias $(ALIAS) --base-path $(EXPORTS)/$(MODEL) $(ARGS)

rollback: $(STAMP)  ## MODEL=setnet: the champion alias (and the stable label) back to the previous version
	$(PY) -m serving.promote --model $(MODEL) --rollback --base-path $(EXPORTS)/$(MODEL) $(ARGS)
