"""bench/bus_tick.py in --quick mode: the JSON it writes holds sane tick times and the right byte floor.

Expected byte counts are worked out here from the protocols and the data sheets, not from
the bench: Dynamixel P2.0 sync read = 10 framing + 4 (address, length) + 6 IDs = 20;
status = 11 + 10 data (Present Current/Load 126..127, Velocity 128..131, Position
132..135) = 21, six of them; sync write = 10 + 4 + 6 x (1 + 4) = 44; 190 bytes, 1.9 ms
at 10 bits per byte and 1 Mbaud. Feetech: 6 + 2 + 6 = 14; 6 + 6 data (Position 56,
Speed 58, Load 60, 2 bytes each) = 12, six; 6 + 2 + 6 x (1 + 2) = 26; 112 bytes, 1.12 ms.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bus_tick.py"
EXPECTED = {  # model -> (sync read, one status, sync write, total bytes, floor ms)
    "xl330-m288": (20, 21, 44, 190, 1.9),
    "xl430-w250": (20, 21, 44, 190, 1.9),
    "sts3215": (14, 12, 26, 112, 1.12),
}


@pytest.fixture(scope="module")
def bus_tick():
    assert BENCH.is_file(), f"{BENCH} is missing"
    spec = importlib.util.spec_from_file_location("bus_tick_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def report(bus_tick, tmp_path_factory):
    out = tmp_path_factory.mktemp("bus_tick") / "bus_tick.json"
    assert bus_tick.main(["--quick", "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_byte_floor_from_the_register_sizes(report):
    for model, (sync_read, status, sync_write, total, floor_ms) in EXPECTED.items():
        floor = report["floor"][model]
        assert floor["bytes"]["sync_read"] == sync_read
        assert floor["bytes"]["status_each"] == status
        assert floor["bytes"]["status_all"] == 6 * status
        assert floor["bytes"]["sync_write"] == sync_write
        assert floor["bytes"]["total"] == total
        assert floor["floor_ms"] == pytest.approx(floor_ms)
        assert floor["bytes"]["total_arithmetic"] == f"{sync_read} + 6 x {status} + {sync_write}"
    assert report["floor"]["xl330-m288"]["return_delay_at_spec_default_ms"] == pytest.approx(3.0)  # 6 x 500 us


def test_bytes_on_the_pty_match_the_floor(report):
    for model, (sync_read, status, sync_write, total, _) in EXPECTED.items():
        seen = report["results"][model]["emulator_in_process"]["bytes_seen_per_tick"]
        assert seen["to_servos"] == sync_read + sync_write, model
        if model == "sts3215":
            assert seen["from_servos"] == 6 * status
        else:
            # Byte stuffing: a negative Present Velocity (.. FF FF) then a position byte FD, or a
            # negative current/load (FD FF) then a velocity starting FF, gains an FD now and then.
            assert 6 * status <= seen["from_servos"] <= 6 * status + 0.5, model


def test_tick_times_are_sane_and_the_motors_move(report):
    assert report["config"]["ticks"] == 200 and report["config"]["quick"]
    assert report["machine"]["cpus"] >= 1 and report["machine"]["dynamixel_sdk"]
    for model in EXPECTED:
        for mode in ("emulator_in_process", "emulator_subprocess"):
            r = report["results"][model][mode]
            tick, read, write = r["tick_ms"], r["read_state_ms"], r["write_goals_ms"]
            assert 0 < tick["p50"] <= tick["p90"] <= tick["p99"] <= tick["max"] < 1000.0, (model, mode, tick)
            assert tick["p50"] >= read["p50"] * 0.5 and tick["max"] >= read["max"]
            assert write["p50"] > 0
            # Back to back: ticks/s is the inverse of the mean tick, give or take the loop's own cost.
            assert r["ticks_per_second"] == pytest.approx(r["ticks"] / r["seconds"])
            assert r["ticks_per_second"] <= 1000.0 / tick["mean"] * 1.001
            assert r["ticks_per_second"] >= 1000.0 / tick["mean"] * 0.5
            assert r["stale_ticks"] == 0
            assert max(r["position_span_rad"]) > 0.01, "the goals vary: the motors must move"
            t = r["target"]
            limit = 2 * report["floor"][model]["floor_ms"] + 1.0
            assert t["limit_ms"] == pytest.approx(limit)
            assert t["met"] == (tick["p99"] <= limit)
            assert t["p99_over_limit"] == pytest.approx(tick["p99"] / limit)
            assert 0 <= t["ticks_over_limit_fraction"] <= 1
            if t["ticks_over_limit_fraction"] == 0:
                assert t["met"]
            elif t["ticks_over_limit_fraction"] > 0.02:
                assert not t["met"]
            assert t["estimated_real_tick_p99_ms"] == pytest.approx(tick["p99"] + report["floor"][model]["floor_ms"])
        share = report["results"][model]["emulator_in_process"]["emulator_share"]
        assert 0 < share < 1
