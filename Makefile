# Two commands for a fresh machine: `make demo` and `make test`. Each installs what it needs.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tools whose dependencies clash with the project's (check-jsonschema needs a click newer than
# faust-streaming's click<8.4) get a venv of their own.
TOOLS_VENV := .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed

CHROMIUM := /usr/bin/chromium

.PHONY: install chromium tools test test-fast lint demo bench quality clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned, so that the local CPU wheel is used and no CUDA wheels are fetched.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) chromium

# Debian's chromium, which the browser tests drive through Playwright (never `playwright install`:
# it downloads browsers). Installed once; later runs only check that it is there.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" -eq 0 ]; then SUDO=; \
		elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
		else echo "make: $(CHROMIUM) is missing; install Debian's chromium as root:" \
			"apt-get update && apt-get install -y chromium" >&2; exit 1; fi; \
		$$SUDO apt-get update && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi

$(TOOLS_STAMP):
	$(PY) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet 'check-jsonschema>=0.29'
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

# The whole stack in one process with a demo catalog; Ctrl-C stops it.
demo: $(STAMP)
	$(BIN)/lookalike dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint chromium tools
	$(BIN)/pytest

# The inner loop: everything but the tests marked slow (real model, real broker).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.embed
	$(BIN)/python -m bench.streams

# The README's quality table, through the path users run: the evaluation catalog written as a
# dataset, fine-tuned with train --data, then evaluated on its held-out test items against the
# ImageNet features (with the HTML report in data/quality/report/).
QUALITY := data/quality
quality: $(STAMP)
	$(BIN)/lookalike dataset demo $(QUALITY)
	$(BIN)/lookalike train --data $(QUALITY)/manifest.jsonl --out data/train
	$(BIN)/lookalike eval --data $(QUALITY)/manifest.jsonl --model data/train/model.pt \
		--compare imagenet --report $(QUALITY)/report

clean:
	rm -rf $(VENV) $(TOOLS_VENV)
