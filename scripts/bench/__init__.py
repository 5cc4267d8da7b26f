"""Measurement tools: the throughput / latency benchmark (``cli``) against in-process, Flask and
LitServe (``baselines``), the closed-loop load generator it shares with the soak (``load``), the
regression gate (``gate``), the serving goals and setting variants (``goals``), tuning sweeps
(``tune``), the GPU path (``gpu``, ``gpu_checks``, the kit ``gpu_kit`` and ``gpu_check.sh``), the
soak (``soak`` with ``memcheck``) and capacity planning (``capacity``).

    python -m scripts.bench --concurrency 1,2,4,8,16
    python -m scripts.bench.soak --duration 120
    python -m scripts.bench.capacity --cameras 12 --fps 10
"""

__all__ = [
    "baselines", "capacity", "cli", "gate", "goals", "gpu", "gpu_checks", "gpu_kit", "load", "memcheck",
    "soak", "tune",
]  # fmt: skip
