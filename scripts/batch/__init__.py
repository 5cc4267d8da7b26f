"""Scheduled batch scoring: pick input files (``selection``), score them through the server or an
archive in-process (``scorers``) with the detector settings asked for (``settings``), journal
finished rows so runs resume (``output``), render JSONL / CSV / COCO atomically (``formats``);
``cli`` is the command and ``cron.sh`` the cron wrapper with a lock.

    python -m scripts.batch images/ -o scores.jsonl --model face_detector --version 2.0
"""

__all__ = ["cli", "formats", "output", "progress", "scorers", "selection", "settings"]
