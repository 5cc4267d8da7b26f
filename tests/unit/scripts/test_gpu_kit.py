"""scripts/bench/gpu_kit.py's config merge and scripts/bench/gpu_checks.py's summary, without a kit."""

from __future__ import annotations

import json

import pytest
import yaml

from handlers.config import RetinaFaceConfig
from scripts.bench.gpu_checks import jpeg_cases, summary
from scripts.bench.gpu_kit import GPU_CONFIG, merged_config
from scripts.packaging.build_archives import ARCHIVES


def test_gpu_config_merges_over_the_cpu_config_and_validates():
    base = ARCHIVES["face_detector-2.0"].config
    merged = merged_config(base, GPU_CONFIG)
    cpu = yaml.safe_load(base.read_text())
    assert (merged["minWorkers"], merged["maxWorkers"], merged["deviceType"]) == (1, 1, "gpu")
    assert merged["batchSize"] > cpu["batchSize"] and merged["maxBatchDelay"] == 2
    # Keys the GPU file does not name keep the CPU config's values, in the handler section too.
    assert merged["handler"]["score_threshold"] == cpu["handler"]["score_threshold"]
    assert merged["handler"]["gpu_jpeg_decode"] is True
    RetinaFaceConfig.from_section(merged["handler"])  # raises ConfigError on a bad key or value


def _write(folder, name, data):
    (folder / name).write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("cuda", "devices", "jpegs_ok", "box_px", "passed"),
    [
        (True, ["cuda:0"], True, 0.4, True),
        (True, ["cpu"], True, 0.4, False),  # a GPU config whose workers ran on CPU
        (True, ["cuda:0"], False, 0.4, False),  # nvJPEG disagreed with PIL on some file
        (True, ["cuda:0"], True, 1.5, False),  # fp16 boxes off by more than 1 px
        (False, ["cpu"], True, None, True),  # CPU side: fp16 not measured, not required
    ],
)
def test_summary_decides_on_correctness_and_reports_goals(tmp_path, cuda, devices, jpegs_ok, box_px, passed):
    server = {"worker_devices": devices}
    served = [{"target": "torchserve", "concurrency": c, "throughput_rps": r, "server": server}
              for c, r in ((16, 2500.0), (64, 4100.0))]  # fmt: skip
    _write(tmp_path, "gpu_served.json", {"steps": served})
    _write(tmp_path, "jpegs.json", {"all_ok": jpegs_ok})
    _write(tmp_path, "gpu_inprocess.json", {"rows": [{"images_per_s": 7000.0}, {"images_per_s": 9000.0}]})
    _write(tmp_path, "precision.json", {"max_box_px": box_px} if box_px is not None else {"skipped": "cpu"})
    result = summary(tmp_path, cuda)
    assert result["passed"] is passed
    assert (
        result["goals"]["served_img_s"]["value"] == 4100.0
        and result["goals"]["served_img_s"]["state"] == "met"
    )
    assert result["goals"]["inprocess_img_s"]["state"] == "met"
    expected_fp16 = "not measured" if box_px is None else "met" if box_px <= 1 else "not met"
    assert result["goals"]["fp16_box_px"]["state"] == expected_fp16


def test_summary_of_an_empty_run_passes_nothing(tmp_path):
    result = summary(tmp_path, cuda=True)
    assert not result["passed"] and {g["state"] for g in result["goals"].values()} == {"not measured"}


def test_unusual_jpegs_are_distinct_files():
    cases = jpeg_cases()
    assert len(set(cases.values())) == len(cases) >= 12
    assert all(body[:2] == b"\xff\xd8" for body in cases.values())
