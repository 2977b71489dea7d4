# The two commands: `make demo` and `make test`. Both create .venv and install
# tfmdl into it when missing; a stamp keyed on the packaging files keeps a
# second run quick. `make test` also creates .venv-io, the io extra's
# TensorFlow 2.17 environment (tensorflow-io), and runs the io-marked tests there.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tfmdl-installed
VENV_IO := .venv-io
BIN_IO := $(VENV_IO)/bin
STAMP_IO := $(VENV_IO)/.tfmdl-installed
DEMO_DIR ?= demo_out
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: demo test test-slow test-all venv venv-io clean

venv: $(STAMP)

venv-io: $(STAMP_IO)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev,serving,bench,plots]'
	touch $(STAMP)

$(STAMP_IO): setup.cfg pyproject.toml Makefile
	test -x $(BIN_IO)/python || $(PYTHON) -m venv $(VENV_IO)
	$(BIN_IO)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN_IO)/python -m pip install --quiet -e '.[io,io-test,dev]'
	touch $(STAMP_IO)

demo: $(STAMP)
	$(BIN)/tfmdl data synth --preset=feed --train=200000 --eval=50000 --seed=0 \
	    --out=$(DEMO_DIR)/feed --reuse --overwrite
	$(BIN)/tfmdl benchmark pipeline --data=$(DEMO_DIR)/feed --batch_size=1024
	$(BIN)/tfmdl train --config=configs/mdl_feed.yaml --data=$(DEMO_DIR)/feed \
	    --model_dir=$(DEMO_DIR)/mdl_feed --epochs=1 --verbose=2
	$(BIN)/tfmdl evaluate --model_dir=$(DEMO_DIR)/mdl_feed --data=$(DEMO_DIR)/feed
	$(BIN)/tfmdl export --model_dir=$(DEMO_DIR)/mdl_feed --export_base=$(DEMO_DIR)/export \
	    --model_name=mdl_feed --data=$(DEMO_DIR)/feed
	$(BIN)/tfmdl predict --export_dir=$(DEMO_DIR)/export/mdl_feed \
	    --input=$(DEMO_DIR)/feed/eval-00000.tfrecord --limit=5

# `make test` (what CI runs, within 20 minutes on 2 cores): every test except those
# marked `slow`, on TEST_WORKERS pytest-xdist processes (most of the suite's time is
# single-threaded graph tracing and XLA compilation, so two workers use both cores;
# tests/conftest.py keeps tests that share a trained model or a cluster on one
# worker), then the io-marked tests in .venv-io (tensorflow-io, TF 2.17). Either
# failing fails the target. `make test-slow` runs the `slow` tier: multi-process
# MultiWorkerMirrored and ParameterServer clusters, the CLI's evaluate/compare/export
# runs, the benchmark suite's end-to-end runs and the learning checks (about a third
# of the whole suite's test time); run it before a release or when touching those paths.
TEST_WORKERS ?= 2
PYTEST_MAIN = $(BIN)/python -m pytest -q --timeout=900 -n $(TEST_WORKERS) --dist loadgroup
test: $(STAMP) $(STAMP_IO)
	$(PYTEST_MAIN) -m "not slow" tests
	$(BIN_IO)/python -m pytest -q --timeout=600 -m io tests/io

test-slow: $(STAMP)
	$(PYTEST_MAIN) -m slow tests

test-all: test test-slow

clean:
	rm -rf $(VENV) $(VENV_IO) $(DEMO_DIR) build *.egg-info
