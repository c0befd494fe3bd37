# kdpipe: the pipeline as Make targets. `make demo` runs it offline on the
# bundled example; copy this file and change the variables to run it on yours.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
KDPIPE  := $(BIN)/kdpipe

.PHONY: help install test test-all demo clean
help:
	@echo "make install    build $(VENV) from nothing (pinned versions, CPU torch)"
	@echo "make test       run the test suite (installs first if needed)"
	@echo "make test-all   also run the slow end-to-end tests"
	@echo "make demo       run the whole pipeline offline on the bundled example"
	@echo "make clean      remove the demo's work folder"

# ------------------------------------------------------------------ install
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest

test-all: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m pytest -m ''

# ------------------------------------------------------------------ the pipeline
WORK    ?= work

demo: install $(WORK)/seeds.jsonl

$(WORK)/seeds.jsonl: data/example/questions.jsonl $(VENV)/.installed
	$(KDPIPE) seed $< -o $@ --eval-out $(WORK)/eval.jsonl --eval-frac 0.2

clean:
	rm -rf $(WORK)
