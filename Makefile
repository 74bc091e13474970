# Two commands do all the set-up: `make demo` and `make test`.
# Each installs what it needs (Debian packages, a virtual environment, Python packages),
# skipping what is already there. A truly fresh Debian 12 needs make itself first:
#   su -c 'apt-get update && apt-get install -y make'     (the README's one line)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# python3-venv: Debian's python3 cannot make a venv without it; systemd: systemd-analyze,
# which the unit-file tests use; ca-certificates: pip's HTTPS to PyPI; chromium: the
# console's browser tests, driven by Playwright, whose own node needs libatomic1 (which
# nothing else here pulls in on a minimal Debian 12); libnss3-tools: certutil, to make a
# browser trust the console's device authority in its test; nats-server and rabbitmq-server:
# the whole loop on a NATS cluster and on RabbitMQ (each test starts its own on free ports).
DEB_PACKAGES := python3 python3-venv ca-certificates systemd mosquitto mosquitto-clients age \
	ffmpeg openssl shellcheck chromium libatomic1 libnss3-tools debootstrap nats-server \
	rabbitmq-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit ha distro pi-smoke bench deps root venv clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	    echo "make: missing Debian packages:$$missing; install them as root (su -c 'apt-get update && apt-get install -y$$missing'), or install sudo"; \
	    exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# distro and pi-smoke build Debian trees (debootstrap, chroot, mount): as root, or with
# sudo. Without either, say so in one line before anything else runs.
root:
	@if [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	  echo "make: make distro (the end of make test) builds Debian trees with debootstrap and chroot, which needs root: install sudo, or run make lint typecheck unit, then su -c 'make distro'"; \
	  exit 1; \
	fi

$(BIN)/python: | deps
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,dev]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

unit: deps venv
	$(BIN)/pytest -q -n 2 --dist loadgroup --ignore=tests/home_assistant

# The doorbell in a real Home Assistant (2025.4.4, the newest on Python 3.13) over a real
# home broker. HA's environment is made once by tests/home_assistant/ha_env.sh and cached
# in $$DOORBELL_HA_CACHE (default /var/cache/doorbell-ha), like the Debian trees.
ha: deps venv
	DOORBELL_HA_ENV="$$(bash tests/home_assistant/ha_env.sh)" $(BIN)/pytest -q tests/home_assistant

# The Pi path: the recorder, export, share and daemon tests in Debian 13 and 12 user
# spaces (debootstrap, cached in $$DOORBELL_ROOTFS_CACHE or /var/cache/doorbell-rootfs)
# with the distribution's Python, PyAV and numpy, the venv made by systemd/venv.sh.
distro: root deps
	$(SUDO) bash tests/distro/run.sh trixie
	$(SUDO) bash tests/distro/run.sh bookworm

test: root deps venv lint typecheck unit ha distro

# The same on arm64 as on the Pi (Debian 13 under qemu-user-static; slow, not in `test`).
pi-smoke: root deps
	@dpkg-query -W -f='$${Status}' qemu-user-static 2>/dev/null | grep -q "ok installed" || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq qemu-user-static; }
	$(SUDO) bash tests/distro/pi_smoke.sh

demo: deps venv
	$(BIN)/python -m cloud.demo

bench: deps venv
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
