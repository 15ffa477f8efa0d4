"""The bench's figures from several rounds (bench/run.py), without running a proxy."""

from __future__ import annotations

from bench.rounds import median_figures


def test_each_number_is_the_median_of_its_rounds_and_errors_the_most() -> None:
    rounds = [
        {"rt/s": 100.0, "p99_us": 900.0, "errors": 0, "note": "first"},
        {"rt/s": 300.0, "p99_us": 100.0, "errors": 2, "note": "second"},
        {"rt/s": 200.0, "p99_us": 5000.0, "errors": 0, "note": "third"},
    ]
    assert median_figures(rounds) == {
        "rt/s": 200.0,
        "p99_us": 900.0,
        "errors": 2,
        "note": "first",
        "rounds": 3,
    }


def test_a_failed_round_is_left_out_and_all_failed_is_reported() -> None:
    failed = {"error": "RuntimeError: load failed"}
    assert median_figures([failed, {"MB/s": 10.0}, {"MB/s": 30.0}]) == {"MB/s": 20.0, "rounds": 2}
    assert median_figures([failed, failed]) == failed


def test_one_round_is_kept_as_it_is() -> None:
    assert median_figures([{"MB/s": 10.0, "frames/s": None}]) == {"MB/s": 10.0, "frames/s": None}
