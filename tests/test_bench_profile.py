"""The benchmarks' window profile: where a measured window's time went, from the stage metrics."""

import os

from infra.bench.common import profile_counters, window_profile
from processor import metrics


def test_the_profile_is_each_stages_share_of_the_window_and_ms_a_call():
    before = {"persons": (10.0, 100.0), "embed": (2.0, 5.0), "cpu": 50.0}
    after = {"persons": (17.5, 250.0), "embed": (2.0, 5.0), "cpu": 62.0}
    profile = window_profile(before, after, elapsed=10.0)
    assert profile == {"persons_busy": 0.75, "persons_ms_per_call": 50.0, "embed_busy": 0.0,
                       "embed_ms_per_call": None, "process_cores": 1.2, "cpu_cores": os.cpu_count()}


def test_the_counters_follow_the_stage_seconds_metric():
    before = profile_counters(("bench-profile-test",))
    metrics.STAGE_SECONDS.labels("bench-profile-test").observe(0.25)
    metrics.STAGE_SECONDS.labels("bench-profile-test").observe(0.75)
    after = profile_counters(("bench-profile-test",))
    assert after["bench-profile-test"][0] - before["bench-profile-test"][0] == 1.0
    assert after["bench-profile-test"][1] - before["bench-profile-test"][1] == 2.0
    assert after["cpu"] >= before["cpu"]
