"""The pairing arithmetic of scripts/bench/compare.py (the tool itself runs in
tests/integration/test_bench_compare.py)."""

from __future__ import annotations

from scripts.bench.compare import pair_summary


def test_pair_summary_counts_pairs_and_signs():
    def window(rps: float, p50: float) -> dict:
        return {"throughput_rps": rps, "latency_ms": {"p50": p50}}

    a = [window(10, 100), window(10, 100), window(10, 100), window(10, 100)]
    b = [window(11, 90), window(12, 80), window(9, 110), window(10, 100)]
    summary = pair_summary(a, b)
    assert summary["throughput_b_over_a"] == [1.1, 1.2, 0.9, 1.0]
    assert summary["b_ahead_in"] == 2 and summary["pairs"] == 4
    assert summary["throughput_ratio_median"] == 1.05 and summary["p50_ratio_median"] == 0.95
    assert summary["sign_test_p"] == 1.0  # 2 of 3 decided pairs: no evidence either way
