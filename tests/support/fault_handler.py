"""Test-only TorchServe entry file: face_detector 2.0 (RetinaFace) with injectable faults.

Never shipped in model_store/: tests build it into temporary stores (tests/support/fault_archives.py).

    X-Fault-Sleep-S: <seconds>   request header; the worker sleeps that long before handling the
                                 batch (a slow or stuck handler, a worker to kill mid-request)
    faults.leak_kb_per_request   model-config.yaml; memory kept forever per request (a leak)
"""

from __future__ import annotations

import time
from typing import Any

from handlers.face_handler import RetinaFaceHandler

SLEEP_HEADER = "x-fault-sleep-s"
_LEAKED: list[bytes] = []  # grows with every request when faults.leak_kb_per_request > 0


class FaultInjectingHandler(RetinaFaceHandler):
    def handle(self, data: list[dict[str, Any]], context: Any) -> list[str]:
        sleep_s = 0.0
        for idx in range(len(data)):
            headers = {str(k).lower(): v for k, v in (context.get_all_request_header(idx) or {}).items()}
            value = headers.get(SLEEP_HEADER)
            if value is not None:
                sleep_s = max(sleep_s, float(value.decode() if isinstance(value, bytes) else value))
        if sleep_s:
            time.sleep(sleep_s)
        faults = (context.model_yaml_config or {}).get("faults") or {}
        leak_kb = int(faults.get("leak_kb_per_request", 0))
        for _ in range(len(data) if leak_kb else 0):
            _LEAKED.append(b"\xa5" * (leak_kb * 1024))  # written bytes: counted in RSS
        return super().handle(data, context)
