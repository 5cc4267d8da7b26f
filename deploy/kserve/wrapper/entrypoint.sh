#!/bin/sh
# Entry point of the Dockerfile's kserve image (under tini). KServe's TorchServe runtime passes the
# TorchServe command as arguments:
#   torchserve --start --model-store=/mnt/models/model-store --ts-config=/mnt/models/config/config.properties
# Without --foreground it starts TorchServe in the background and returns; the KServe wrapper
# (serve.py, its own venv) then serves KServe's protocol on :8080 and forwards to TorchServe.
set -eu
"$@"
exec /opt/kserve-venv/bin/python /opt/kserve-wrapper/serve.py
