"""Every device end to end through the real nodes: bench/teleop_latency.py's measurement with a
few events per device. A key written to a pty, an HID report through pyspacemouse's decoding, an
evdev event: each reaches ``hilserl/human_action`` and the mux's ``hilserl/executed_action`` with
the commanded direction, none missed; the event-to-human-action latency is small and the
executed action waits at most one control period for the next policy action (plus slack for a
loaded 2-core machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "teleop_latency.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("teleop_latency_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("device", ["keyboard", "spacemouse", "gamepad"])
def test_a_device_event_reaches_the_executed_action(ros_domain_id, device, monkeypatch):
    bench = load_bench()
    if device != "keyboard":  # the bench replaces the module's reader factory: undo it afterwards
        module = __import__(f"hilserl_teleop.devices.{device}", fromlist=["make_reader"])
        monkeypatch.setattr(module, "make_reader", module.make_reader)
    result = bench.measure(device, events=6, control_hz=10.0, domain_id=ros_domain_id)
    human, executed = result["to_human_action_ms"], result["to_executed_ms"]
    print(device, human, executed)
    assert human["missing"] == 0 and executed["missing"] == 0
    assert human["p99"] < 100.0  # typically 1-4 ms; generous for a loaded machine
    assert executed["max"] < 100.0 + 150.0  # one control period, plus slack
    assert executed["p50"] >= human["p50"]
