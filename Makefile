# Two commands do all the set-up: `make demo` and `make test`.
# Each installs what it needs (Debian packages, a virtual environment, Python packages),
# skipping what is already there.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEB_PACKAGES := mosquitto mosquitto-clients age ffmpeg openssl shellcheck chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit bench deps venv clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: deps venv
	$(BIN)/pytest -q -n 2 --dist loadgroup

test: deps venv lint typecheck unit

demo: deps venv
	$(BIN)/python -m cloud.demo

bench: deps venv
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
