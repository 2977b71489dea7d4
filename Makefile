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

.PHONY: demo test venv venv-io clean

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

# The main suite skips the io-marked tests (no tensorflow-io in .venv); .venv-io
# runs exactly those. Either failing fails the target.
test: $(STAMP) $(STAMP_IO)
	$(BIN)/python -m pytest -q --timeout=900 tests
	$(BIN_IO)/python -m pytest -q --timeout=600 -m io tests/io

clean:
	rm -rf $(VENV) $(VENV_IO) $(DEMO_DIR) build *.egg-info
