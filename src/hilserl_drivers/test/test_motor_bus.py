"""The motor bus layer on the real SDKs, against the servo emulators over their ptys.

Each bus (XL330-M288 and XL430-W250 on ``DynamixelBus``, STS3215 on ``FeetechBus``)
drives a 6-motor emulator. The calibration has every homing offset at 2048 (the
emulator's start position) except joint 6 (1948), and directions alternating +1 / -1,
so every conversion is checked in both directions. Expected numbers are worked out here
from the data sheets, not from the module under test: 4096 ticks per revolution; the
Dynamixel velocity LSB is 0.229 rev/min; XL330 current 1 mA per LSB; XL430 / STS3215
load 0.1 % per LSB.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from hilserl_drivers.bus_emulator import DynamixelEmulator, FeetechEmulator
from hilserl_drivers.motor_bus import (
    ArmCalibration,
    CalibrationError,
    DynamixelBus,
    FeetechBus,
    JointCalibration,
    MotorBusError,
)

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

IDS = [1, 2, 3, 4, 5, 6]
NAMES = ["pan", "lift", "elbow", "wrist_flex", "wrist_roll", "gripper"]
DIRECTIONS = [1, -1, 1, -1, 1, -1]
OFFSETS = [2048, 2048, 2048, 2048, 2048, 1948]
SPEED = 2000.0  # ticks/s, the emulated motors' speed limit
RAD_PER_TICK = 2 * math.pi / 4096
TIMEOUT_S = 0.1  # beyond the transmission time; room for a busy machine's scheduling (cf. test_bus_emulator)
MISSED = 3

# model -> (emulator class, bus class, velocity ticks/s per LSB, effort per LSB, effort LSB per tick of error)
SETUPS = {
    "xl330-m288": (DynamixelEmulator, DynamixelBus, 0.229 * 4096 / 60, 0.001, 2.0),
    "xl430-w250": (DynamixelEmulator, DynamixelBus, 0.229 * 4096 / 60, 0.001, 1.0),
    "sts3215": (FeetechEmulator, FeetechBus, 1.0, 0.001, 1.0),
}


def goals_in_emulator(emulator, ticks, timeout: float = 0.5) -> list[int]:
    """The motors' Goal Position once they equal ``ticks`` (a sync write has no answer to wait for)."""
    deadline = time.monotonic() + timeout
    while True:
        goals = [emulator.motor(i).read_register("Goal Position") for i in IDS]
        if goals == list(ticks) or time.monotonic() > deadline:
            return goals
        time.sleep(0.002)


def calibration(model: str, ids=IDS, low: int = 0, high: int = 4095) -> ArmCalibration:
    return ArmCalibration(model, tuple(
        JointCalibration(name=n, id=i, homing_offset=o, direction=d, min_ticks=low, max_ticks=high)
        for n, i, o, d in zip(NAMES, ids, OFFSETS, DIRECTIONS)))


@pytest.fixture(params=list(SETUPS))
def rig(request):
    model = request.param
    emulator_cls, bus_cls, *_ = SETUPS[model]
    emulator = emulator_cls(IDS, model, speed=SPEED).start()
    bus = bus_cls(emulator.port, calibration(model), packet_timeout_s=TIMEOUT_S, max_missed_reads=MISSED)
    bus.connect()
    yield model, emulator, bus
    bus.close()
    emulator.close()


def test_connect_pings_every_motor_and_reads_zero(rig):
    model, emulator, bus = rig
    assert bus.connected
    state = bus.read_state()
    assert state.ids == tuple(IDS) and state.names == tuple(NAMES)
    assert not state.stale and state.failed_ids == () and state.fresh.all()
    expected = [d * (2048 - o) * RAD_PER_TICK for o, d in zip(OFFSETS, DIRECTIONS)]
    np.testing.assert_allclose(state.position, expected, atol=1e-12)
    assert expected[5] == pytest.approx(-100 * RAD_PER_TICK)  # joint 6: offset 1948, direction -1
    np.testing.assert_allclose(state.velocity, 0.0)
    np.testing.assert_allclose(state.effort, 0.0)
    assert state.effort_unit == ("A" if model == "xl330-m288" else "load")
    assert abs(state.stamp - time.monotonic()) < 1.0
    bus.close()
    bus.close()  # idempotent
    assert not bus.connected
    with pytest.raises(MotorBusError, match="not connected"):
        bus.read_state()


def test_present_position_to_radians(rig):
    _, emulator, bus = rig
    emulator.motor(1).set_present_position(2048 + 512)  # +90 deg of motor, direction +1
    emulator.motor(2).set_present_position(2048 + 512)  # direction -1
    emulator.motor(6).set_present_position(1948 + 1024)  # offset 1948, direction -1
    state = bus.read_state()
    assert state.position[0] == pytest.approx(math.pi / 4)
    assert state.position[1] == pytest.approx(-math.pi / 4)
    assert state.position[2] == pytest.approx(0.0)
    assert state.position[5] == pytest.approx(-math.pi / 2)


def test_write_goals_moves_toward_goal_with_velocity_and_effort(rig):
    model, emulator, bus = rig
    _, _, velocity_unit, effort_scale, effort_per_tick = SETUPS[model]
    bus.set_torque(True)
    goal = np.full(6, 1.0)
    ticks = bus.write_goals(goal)
    expected_ticks = [round(o + d * 1.0 / RAD_PER_TICK) for o, d in zip(OFFSETS, DIRECTIONS)]
    assert ticks.tolist() == expected_ticks  # e.g. 2048 + 652 and 2048 - 652
    assert goals_in_emulator(emulator, expected_ticks) == expected_ticks
    time.sleep(0.05)
    state = bus.read_state()
    assert not state.stale
    # Moving (1 rad = 652 ticks takes 0.33 s at 2000 ticks/s), toward +1 rad in every joint frame.
    assert np.all(state.position[:5] > 0.05) and np.all(state.position[:5] < 0.95)
    raw_speed = round(SPEED / velocity_unit)  # LSBs the motor reports: 128 (Dynamixel), 2000 (STS)
    expected_speed = raw_speed * velocity_unit * RAD_PER_TICK  # ~3.07 rad/s
    assert expected_speed == pytest.approx(SPEED * RAD_PER_TICK, rel=0.002)
    np.testing.assert_allclose(state.velocity, expected_speed, rtol=1e-9)  # positive in the joint frame
    # Effort: proportional to the remaining error (emulator), same sign as the motion in the joint frame.
    error_ticks = (goal - state.position) / RAD_PER_TICK
    np.testing.assert_allclose(state.effort, effort_per_tick * error_ticks * effort_scale, atol=2 * effort_scale * 2)
    assert np.all(state.effort > 0)
    time.sleep(0.4)
    state = bus.read_state()
    np.testing.assert_allclose(state.position, goal, atol=RAD_PER_TICK)
    np.testing.assert_allclose(state.velocity, 0.0)


def test_goals_are_clipped_to_the_calibrated_range():
    emulator = FeetechEmulator(IDS, "sts3215", speed=SPEED).start()
    bus = FeetechBus(emulator.port, calibration("sts3215", low=1024, high=3072), packet_timeout_s=TIMEOUT_S)
    with emulator, bus:
        ticks = bus.write_goals([10.0, 10.0, -10.0, 0.1, 0.0, 0.0])
        # +10 rad: direction +1 -> 3072, direction -1 -> 1024; -10 rad on direction +1 -> 1024.
        assert ticks.tolist() == [3072, 1024, 1024, 2048 - round(0.1 / RAD_PER_TICK), 2048, 1948]
        assert goals_in_emulator(emulator, ticks.tolist()) == ticks.tolist()
        with pytest.raises(ValueError, match="wrist_flex"):
            bus.write_goals([0, 0, 0, math.nan, 0, 0])
        with pytest.raises(ValueError, match="expected 6 goals"):
            bus.write_goals([0, 0])


def test_dynamixel_clipping_and_range():
    emulator = DynamixelEmulator(IDS, "xl330", speed=SPEED).start()
    bus = DynamixelBus(emulator.port, calibration("xl330-m288", low=1500, high=2600), packet_timeout_s=TIMEOUT_S)
    with emulator, bus:
        bus.set_torque(True)
        assert bus.write_goals(np.full(6, 3.0)).tolist() == [2600, 1500, 2600, 1500, 2600, 1500]
        time.sleep(0.45)  # 552 ticks at 2000 ticks/s
        state = bus.read_state()
        assert state.position[0] == pytest.approx(552 * RAD_PER_TICK)
        assert state.position[1] == pytest.approx(548 * RAD_PER_TICK)  # direction -1: 2048 - 1500


@pytest.mark.parametrize("bus_cls, emulator_cls, model",
                         [(DynamixelBus, DynamixelEmulator, "xl330-m288"), (FeetechBus, FeetechEmulator, "sts3215")])
def test_missing_motor_refused_naming_it(bus_cls, emulator_cls, model):
    with emulator_cls(IDS[:5], model, speed=SPEED) as emulator:  # no motor 6
        bus = bus_cls(emulator.port, calibration(model), packet_timeout_s=TIMEOUT_S)
        with pytest.raises(MotorBusError, match=r"motor 6 \(joint 'gripper'\): no answer to ping") as info:
            bus.connect()
        assert "motor 5" not in str(info.value)
        assert not bus.connected
        with pytest.raises(MotorBusError, match="not connected"):
            bus.read_state()


def test_wrong_model_refused_naming_the_motor_and_model():
    with DynamixelEmulator(IDS, "xl430") as emulator:
        bus = DynamixelBus(emulator.port, calibration("xl330-m288"), packet_timeout_s=TIMEOUT_S)
        with pytest.raises(MotorBusError, match=r"motor 1 \(joint 'pan'\): model number 1060 \(xl430-w250\), "
                                                r"configured xl330-m288 \(1200\)") as info:
            bus.connect()
        assert "motor 6" in str(info.value)
    with FeetechEmulator(IDS, "sts3215") as emulator:
        emulator.motor(4).write_register("Model Number", 999)
        bus = FeetechBus(emulator.port, calibration("sts3215"), packet_timeout_s=TIMEOUT_S)
        with pytest.raises(MotorBusError, match=r"motor 4 \(joint 'wrist_flex'\): model number 999 "
                                                r"\(unknown model\), configured sts3215 \(777\)") as info:
            bus.connect()
        assert "motor 3" not in str(info.value) and "motor 5" not in str(info.value)
    with pytest.raises(ValueError, match="sts3215 is a feetech servo"):
        DynamixelBus("/dev/null", calibration("sts3215"))


@pytest.mark.parametrize("fault, reason", [("no_reply", "no status packet"), ("disappear", "no status packet"),
                                           ("corrupt_checksum", "corrupt status packet")])
def test_silent_motor_goes_stale_then_raises(rig, fault, reason):
    _, emulator, bus = rig
    first = bus.read_state()
    emulator.set_fault(fault, ids=3)
    emulator.motor(1).set_present_position(2048 + 100)
    sent = emulator.stats.packets
    start = time.monotonic()
    state = bus.read_state()
    elapsed = time.monotonic() - start
    assert emulator.stats.packets - sent == 2  # the sync read and one retry (for motor 3 only)
    assert elapsed < 2 * TIMEOUT_S + 0.2
    assert state.stale and state.failed_ids == (3,)
    assert reason in state.reasons[3]
    assert state.fresh.tolist() == [True, True, False, True, True, True]
    assert state.position[0] == pytest.approx(100 * RAD_PER_TICK)  # the others are fresh
    assert state.position[2] == first.position[2]  # motor 3: the last good value, marked stale
    # A deadline shorter than a packet timeout leaves no time for a retry.
    sent = emulator.stats.packets
    state = bus.read_state(deadline_s=TIMEOUT_S / 2)
    assert emulator.stats.packets - sent == 1 and state.failed_ids == (3,)
    with pytest.raises(MotorBusError, match=rf"motor 3 \(joint 'elbow'\) missed {MISSED} consecutive reads "
                                            rf"\({reason}") as info:
        bus.read_state()
    assert "motor 2" not in str(info.value)
    emulator.clear_faults()
    state = bus.read_state()
    assert not state.stale and state.failed_ids == ()


def test_stale_before_any_good_read_is_nan():
    with FeetechEmulator(IDS, "sts3215") as emulator:
        bus = FeetechBus(emulator.port, calibration("sts3215"), packet_timeout_s=TIMEOUT_S, read_tries=1)
        with bus:
            emulator.set_fault("no_reply", ids=[2, 5])
            state = bus.read_state()
            assert state.failed_ids == (2, 5)
            assert np.isnan(state.position[[1, 4]]).all() and np.isfinite(state.position[[0, 2, 3, 5]]).all()


def test_hardware_error_reported_but_values_fresh(rig):
    _, emulator, bus = rig
    emulator.set_fault("hardware_error", ids=2)
    state = bus.read_state()
    assert not state.stale and state.error_ids == (2,)


def test_torque_off_tries_every_motor_and_names_the_failed_one(rig):
    _, emulator, bus = rig
    bus.set_torque(True)
    assert [emulator.motor(i).read_register("Torque Enable") for i in IDS] == [1] * 6
    emulator.set_fault("disappear", ids=4)
    with pytest.raises(MotorBusError, match=r"torque off failed for motor 4 \(joint 'wrist_flex'\)") as info:
        bus.set_torque(False)
    assert "motor 5" not in str(info.value) and "motor 3" not in str(info.value)
    assert [emulator.motor(i).read_register("Torque Enable") for i in IDS] == [0, 0, 0, 1, 0, 0]


# ------------------------------------------------------------------ calibration
def test_calibration_yaml_round_trip(tmp_path):
    original = calibration("xl330", low=100, high=4000)
    path = tmp_path / "arm.yaml"
    original.save(path)
    loaded = ArmCalibration.load(path)
    assert loaded == original
    assert loaded.model == "xl330-m288"
    assert loaded.joints[5] == JointCalibration("gripper", 6, 1948, -1, 100, 4000)
    assert "homing_offset: 1948" in path.read_text()
    np.testing.assert_allclose(loaded.ticks_to_radians(loaded.radians_to_ticks([0.1, -0.2, 0.3, 0, 1, -1])),
                               [0.1, -0.2, 0.3, 0, 1, -1])


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["joints"][2].update(direction=2), r"joint 'elbow': direction must be 1 or -1, got 2"),
    (lambda d: d["joints"][3].update(min_ticks=3000, max_ticks=2000), r"joint 'wrist_flex': min_ticks \(3000\)"),
    (lambda d: d["joints"][1].update(homing_offset=5000), r"joint 'lift': homing_offset must be in 0..4095"),
    (lambda d: d["joints"][4].update(id=1), r"joint 'wrist_roll': motor ID 1 already used by joint 'pan'"),
    (lambda d: d["joints"][0].pop("max_ticks"), r"joint 'pan': missing keys \['max_ticks'\]"),
    (lambda d: d["joints"][5].update(id="six"), r"joint 'gripper': id must be an integer"),
    (lambda d: d.update(model="xm999"), r"unknown servo model 'xm999'"),
])
def test_bad_calibration_file_refused_naming_the_joint(tmp_path, edit, message):
    data = calibration("sts3215").to_dict()
    edit(data)
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CalibrationError, match=message) as info:
        ArmCalibration.load(path)
    assert str(path) in str(info.value)


def test_write_register_reaches_every_motor_and_refuses_what_it_cannot_write():
    emulator = DynamixelEmulator(IDS, "xl330-m288", speed=SPEED).start()
    bus = DynamixelBus(emulator.port, calibration("xl330-m288"), packet_timeout_s=TIMEOUT_S)
    try:
        bus.connect()
        bus.write_register("Position P Gain", 400)
        deadline = time.monotonic() + 0.5  # a sync write has no status packet
        while time.monotonic() < deadline and [emulator.motor(i).read_register("Position P Gain") for i in IDS] != [400] * 6:
            time.sleep(0.005)
        assert [emulator.motor(i).read_register("Position P Gain") for i in IDS] == [400] * 6
        with pytest.raises(ValueError, match="read-only"):
            bus.write_register("Present Position", 1)
        with pytest.raises(ValueError, match="no register 'Warp Drive'"):
            bus.write_register("Warp Drive", 1)
    finally:
        bus.close()
        emulator.close()
