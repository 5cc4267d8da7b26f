"""Scheduled batch scoring: pick input files (``selection``), score them through the server or an
archive in-process (``scorers``) with the detector settings asked for (``settings``), write
resumable, atomic results (``output``); ``cli`` is the command and ``cron.sh`` the cron wrapper
with a lock.

    python -m scripts.batch images/ -o scores.jsonl --model face_detector --version 2.0
"""

__all__ = ["cli", "output", "progress", "scorers", "selection", "settings"]
