"""The leader arm over two emulated buses, through the real SDKs, without ROS.

The follower is ``RealArm`` on one emulator, the leader is ``LeaderArmReader`` on another
emulator of the same arm. ``Graph`` plays what the nodes do at 10 Hz: the follower reads, the
reader gets the follower's joints (``follow``), the reader reads the leader, and the follower
steps the human's deltas when the command is active, the policy's (a slow scripted motion)
otherwise. A "hand" moves the leader's motors (``set_present_position``) before each read.
The follower's end-effector step and joint-goal change per tick are measured around both
switches (policy -> human, human -> policy) and printed.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from hilserl_drivers.arms import KOCH, SO101, dry_run_calibration
from hilserl_testing import home_real_arm
from hilserl_drivers.bus_emulator import DynamixelEmulator, FeetechEmulator
from hilserl_drivers.motor_bus import ArmCalibration, CalibrationError, make_bus
from hilserl_drivers.real_arm import RealArm
from hilserl_teleop.devices import leader_arm
from hilserl_teleop.devices.base import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, DeviceError
from hilserl_teleop.devices.leader_arm import (
    GripperHysteresis,
    LeaderArmConfig,
    LeaderArmReader,
    ee_deltas,
)

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

EMULATORS = {"so101": (SO101, FeetechEmulator), "koch": (KOCH, DynamixelEmulator)}
FOLLOWER_SPEED = 3000.0  # ticks/s
LEADER_SPEED = 1500.0  # ticks/s: a low-gain leader, slower than the follower
PERIOD = 0.1  # s: the graph at 10 Hz
TORQUE = "Torque Enable"


# ----------------------------------------------------------------------- pure parts
def test_ee_deltas_point_at_the_leader_scaled_as_a_vector():
    d = ee_deltas(np.array([0.03, 0.0075, 0.0]), np.zeros(3), 0.015)
    assert np.allclose(d, [1.0, 0.25, 0.0, 0, 0, 0])  # direction kept, largest component 1
    assert np.allclose(ee_deltas(np.array([0.0, -0.006, 0.003]), np.zeros(3), 0.015), [0, -0.4, 0.2, 0, 0, 0])
    assert np.all(ee_deltas(np.array([0.001, 0.0, 0.0]), np.zeros(3), 0.015, deadband_m=0.002) == 0)
    assert np.all(ee_deltas(np.array([np.nan, 0, 0]), np.zeros(3), 0.015) == 0)


def test_gripper_hysteresis():
    g = GripperHysteresis(0.35, 0.65)
    g.reset(0.9)
    assert g.state == GRIPPER_OPEN
    assert [g.update(x) for x in (0.5, 0.36, 0.3, 0.5, 0.64, 0.7)] == [GRIPPER_OPEN, GRIPPER_OPEN, GRIPPER_CLOSE,
                                                                      GRIPPER_CLOSE, GRIPPER_CLOSE, GRIPPER_OPEN]
    g.reset(0.2)
    assert g.state == GRIPPER_CLOSE
    g.reset(float("nan"))
    assert g.state == GRIPPER_STAY


def test_bad_parameters_are_named(tmp_path):
    assert set(leader_arm.PARAMETERS) == {f for f in LeaderArmConfig.__dataclass_fields__}
    for bad, name in (({"takeover_ticks": 0}, "takeover_ticks"), ({"takeover_error_rad": -1.0}, "takeover_error_rad"),
                      ({"gripper_close_below": 0.7}, "gripper_close_below"),
                      ({"position_deadband_m": 0.02}, "position_deadband_m")):
        with pytest.raises(ValueError, match=name):
            LeaderArmConfig(**bad)
    with pytest.raises(ValueError, match="unknown parameters"):
        leader_arm.make_reader({"speed": 1})
    with pytest.raises(ValueError, match="arm must be one of"):
        leader_arm.make_reader({"arm": "ur5", "port": "/dev/null", "calibration": "x.yaml"})
    with pytest.raises(ValueError, match="leader_arm.port is empty"):
        leader_arm.make_reader({"arm": "koch"})
    with pytest.raises(ValueError, match="leader_arm.calibration is empty"):
        leader_arm.make_reader({"arm": "koch", "port": "/dev/null"})
    wrong = tmp_path / "so101.yaml"
    dry_run_calibration(SO101).save(wrong)
    with pytest.raises(CalibrationError, match="feetech servo; the koch arm"):
        leader_arm.make_reader({"arm": "koch", "port": "/dev/null", "calibration": str(wrong)})
    good = tmp_path / "koch.yaml"
    dry_run_calibration(KOCH).save(good)
    reader = leader_arm.make_reader({"arm": "koch", "port": "/dev/null", "calibration": str(good)})
    assert isinstance(reader, LeaderArmReader) and reader.bus.port_name == "/dev/null"


# ------------------------------------------------------------------------- the rig
def make_leader(spec, emulator, **overrides) -> LeaderArmReader:
    values = {"arm": spec.name, "port": emulator.port, "read_period_s": PERIOD,
              "max_step_translation": spec.limits.max_step_translation,
              "max_tracking_error": spec.limits.max_tracking_error, "release_ticks": 5, **overrides}
    config = LeaderArmConfig(**values)
    bus = make_bus(emulator.port, dry_run_calibration(spec), packet_timeout_s=0.02,
                   max_missed_reads=config.max_missed_reads)
    return LeaderArmReader(config, spec, bus)


def torques(emulator, ids) -> list[int]:
    return [emulator.motor(i).read_register(TORQUE) for i in ids]


class Hand:
    """A person's hand on the leader: while ``pose`` (joint positions, rad) is set, it holds the
    leader's motors there (``set_present_position`` every 5 ms, against the motors' torque)."""

    def __init__(self, spec, emulator, calibration) -> None:
        self.spec, self.emulator, self.calibration = spec, emulator, calibration
        self.pose: np.ndarray | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            pose = self.pose
            if pose is not None:
                for motor_id, ticks in zip(self.spec.ids, self.calibration.radians_to_ticks(pose)):
                    self.emulator.motor(motor_id).set_present_position(float(ticks))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Graph:
    """The ROS-free loop: follower read -> follow -> leader read -> follower step; one record per tick."""

    def __init__(self, spec, follower: RealArm, reader: LeaderArmReader, leader_emulator) -> None:
        self.spec, self.follower, self.reader, self.leader_emulator = spec, follower, reader, leader_emulator
        self.calibration = reader.bus.calibration
        self.hand = Hand(spec, leader_emulator, self.calibration)
        self.records: list[dict] = []

    def policy(self, k: int) -> np.ndarray:
        """A slow scripted motion: +-0.3 of the step along y, a 4 s period."""
        return np.array([0.0, 0.3 * math.sin(2 * math.pi * k * PERIOD / 4.0), 0.0, 0.0, 0.0, 0.0])

    def leader_position(self) -> np.ndarray:
        ticks = [self.leader_emulator.motor(i).position for i in self.spec.ids]
        return self.calibration.ticks_to_radians(ticks)

    def tick(self) -> dict:
        k = len(self.records)
        reading = self.follower.read()
        self.reader.follow(self.spec.joints, reading.position, reading.ee_position)
        cmd = self.reader.read(2 * PERIOD)
        assert cmd is not None
        if cmd.active:
            self.follower.step(cmd.deltas, cmd.gripper)
        else:
            self.follower.step(self.policy(k), GRIPPER_STAY)
        goal = self.follower.goal.copy()
        record = {"k": k, "active": cmd.active, "deltas": cmd.deltas, "goal": goal,
                  "goal_ee": self.follower.ik.forward(goal[:5])[0], "follower": reading.position.copy(),
                  "follower_ee": reading.ee_position.copy(), "leader": self.reader.position.copy(),
                  "leader_goal": self.reader.goal.copy(), "torque": self.reader.torque_on}
        self.records.append(record)
        return record


def step_figures(follower: RealArm, records: list[dict], around: int, before: int = 3, after: int = 12) -> dict:
    """Per tick in the window around the switch at record ``around``: the follower's commanded
    end-effector step (largest axis, and norm), its measured end-effector step, its largest
    arm-joint goal change, and how far that change exceeds the one its commanded step implies."""
    window = records[max(1, around - before):around + after]
    ee_axis, ee_norm, measured, joint, excess = [], [], [], [], []
    for r in window:
        previous = records[r["k"] - 1]
        step = r["goal_ee"] - previous["goal_ee"]
        ee_axis.append(float(np.max(np.abs(step))))
        ee_norm.append(float(np.linalg.norm(step)))
        measured.append(float(np.max(np.abs(r["follower_ee"] - previous["follower_ee"]))))
        joint.append(float(np.max(np.abs(r["goal"][:5] - previous["goal"][:5]))))
        excess.append(joint[-1] - implied_joint_step(follower, previous["goal"][:5], step))
    return {"ee_step_axis": max(ee_axis), "ee_step_norm": max(ee_norm), "measured_ee_step_axis": max(measured),
            "joint_goal_step": max(joint), "joint_excess": max(excess), "ticks": len(window)}


def implied_joint_step(follower: RealArm, q: np.ndarray, step: np.ndarray) -> float:
    """The largest joint change an end-effector ``step`` implies at ``q``, as the follower's IK
    weighs it: the position moved by ``step`` and the tool's orientation held (weighted by the
    arm's orientation cost), least squares on the Jacobians (finite differences of the FK)."""
    eps = 1e-6
    p0, r0 = follower.ik.forward(q)
    jp, jr = np.zeros((3, 5)), np.zeros((3, 5))
    for i in range(5):
        p, r = follower.ik.forward(q + eps * np.eye(5)[i])
        jp[:, i] = (p - p0) / eps
        w = r @ r0.T  # small rotation: skew part / eps is the angular motion
        jr[:, i] = np.array([w[2, 1] - w[1, 2], w[0, 2] - w[2, 0], w[1, 0] - w[0, 1]]) / (2 * eps)
    weight = follower.spec.ik_orientation_cost
    a = np.vstack([jp, weight * jr])
    b = np.concatenate([step, np.zeros(3)])
    return float(np.max(np.abs(np.linalg.lstsq(a, b, rcond=None)[0])))


def clamped_ee(reader: LeaderArmReader, q: np.ndarray) -> np.ndarray:
    limits = reader.spec.limits
    return np.clip(reader.forward(q), limits.position_low, limits.position_high)


@pytest.fixture(params=sorted(EMULATORS))
def rig(request):
    spec, emulator_cls = EMULATORS[request.param]
    follower_emulator = emulator_cls(spec.ids, spec.model, speed=FOLLOWER_SPEED).start()
    leader_emulator = emulator_cls(spec.ids, spec.model, speed=LEADER_SPEED).start()
    follower_bus = make_bus(follower_emulator.port, dry_run_calibration(spec), packet_timeout_s=0.02)
    follower = RealArm(spec, follower_bus)
    follower_bus.connect()
    reader = make_leader(spec, leader_emulator)
    graphs: list[Graph] = []
    try:
        yield spec, follower, reader, leader_emulator, graphs
    finally:
        for graph in graphs:
            graph.hand.close()
        reader.close()
        follower.safe_stop()
        follower_emulator.close()
        leader_emulator.close()


# ------------------------------------------------------------------ the take-over
def test_take_over_and_release_never_jump(rig):
    spec, follower, reader, leader_emulator, graphs = rig
    home_real_arm(follower)
    reader.open()
    assert torques(leader_emulator, spec.ids) == [1] * 6
    graph = Graph(spec, follower, reader, leader_emulator)
    graphs.append(graph)
    max_step = spec.limits.max_step_translation

    # (1) the policy acts, the leader comes over (at most max_leader_joint_step per read) and tracks
    leader_start = graph.leader_position()
    for _ in range(25):
        r = graph.tick()
        assert not r["active"] and r["torque"]
    leader_steps = [np.max(np.abs(b["leader_goal"] - a["leader_goal"])) for a, b in zip(graph.records, graph.records[1:])]
    assert max(leader_steps) <= reader.config.max_leader_joint_step + 1e-3
    assert np.max(np.abs(leader_start - follower.home)) > 1.0  # it really came from afar
    tracking = [np.max(np.abs(r["leader"] - r["follower"])) for r in graph.records[-5:]]
    print(f"\n{spec.name}: leader tracking error while the policy acts: {math.degrees(max(tracking)):.2f} deg")
    assert max(tracking) < math.radians(5.0)

    # (2) a hand grabs the leader: shoulder_pan and elbow pushed 0.25 rad off the goal, held there
    grab_offset = np.array([0.25, 0.0, -0.25, 0.0, 0.0, 0.0])
    graph.hand.pose = reader.goal + grab_offset
    naive_jump = float(np.max(np.abs(graph.hand.pose[:5] - follower.goal[:5])))
    for n in range(1, reader.config.takeover_ticks + 2):
        r = graph.tick()
        if r["active"]:
            break
    assert r["active"], "no take-over"
    takeover_reads = n
    assert takeover_reads <= reader.config.takeover_ticks + 1
    switch_on = r["k"]
    assert torques(leader_emulator, spec.ids) == [0] * 6 and not reader.torque_on
    # the hand carries the leader on by 0.01 rad per tick on three joints, 20 ticks, then holds still
    for _ in range(20):
        graph.hand.pose = graph.hand.pose + np.array([0.01, 0.01, -0.01, 0.0, 0.0, 0.0])
        assert graph.tick()["active"]
    # the follower follows toward the leader's pose, then the leader is left still: release
    released = None
    for _ in range(60):
        r = graph.tick()
        if not r["active"]:
            released = r
            break
    assert released is not None, "no release"
    switch_off = released["k"]
    distance = np.linalg.norm(clamped_ee(reader, released["leader"]) - released["follower_ee"])
    assert distance < reader.config.release_distance_m + max_step  # the follower caught up before the release
    # (3) torque back on without a jump: the leader's goal first equals its measured position
    assert reader.torque_on and torques(leader_emulator, spec.ids) == [1] * 6
    assert np.max(np.abs(released["leader_goal"] - released["leader"])) <= 2 * math.pi / 4096
    graph.hand.pose = None  # the person has let go
    for _ in range(12):
        r = graph.tick()
        assert not r["active"] and r["torque"]
    after = graph.records[switch_off:]
    leader_moves = [np.max(np.abs(b["leader"] - a["leader"])) for a, b in zip(after, after[1:])]
    assert max(leader_moves) <= reader.config.max_leader_joint_step + 0.01

    # the measured jumps, both directions
    on = step_figures(follower, graph.records, switch_on)
    off = step_figures(follower, graph.records, switch_off)
    print(f"{spec.name}: take-over after {takeover_reads} reads (takeover_ticks {reader.config.takeover_ticks}), "
          f"release {switch_off - switch_on} ticks later; a naive leader->follower joint copy would jump "
          f"{naive_jump:.3f} rad")
    for label, fig in (("policy->human", on), ("human->policy", off)):
        print(f"{spec.name} {label}: max commanded ee step {1000 * fig['ee_step_axis']:.2f} mm/axis "
              f"({1000 * fig['ee_step_norm']:.2f} mm norm), measured {1000 * fig['measured_ee_step_axis']:.2f} "
              f"mm/axis (limit {1000 * max_step:.1f} mm/axis); max joint goal change {fig['joint_goal_step']:.3f} "
              f"rad/tick, at most {fig['joint_excess']:+.3f} rad beyond what its ee step implies; {fig['ticks']} ticks")
        assert fig["ee_step_axis"] <= max_step + 1e-6
        assert fig["measured_ee_step_axis"] <= max_step + 0.003  # servo tracking and tick quantisation
        assert fig["joint_excess"] <= 0.03
    resumed = step_figures(follower, graph.records, switch_off + 1, before=0, after=10)
    assert resumed["ee_step_axis"] <= 0.3 * max_step + 5e-4  # the policy resumes at its own (slow) speed
    # the follower ended where the person put the leader (clamped into the bounds box)
    assert np.linalg.norm(graph.records[switch_off]["follower_ee"] - clamped_ee(reader, released["leader"])) \
        < reader.config.release_distance_m


# ------------------------------------------------------------------------ failures
@pytest.mark.parametrize("arm", sorted(EMULATORS))
def test_a_leader_motor_that_disappears_is_named(arm):
    spec, emulator_cls = EMULATORS[arm]
    with emulator_cls(spec.ids, spec.model, speed=LEADER_SPEED) as emulator:
        reader = make_leader(spec, emulator, read_period_s=0.02)
        reader.open()
        try:
            for _ in range(3):
                assert reader.read(0.1) is not None
            emulator.set_fault("disappear", ids=3)
            with pytest.raises(DeviceError, match=r"motor 3 \(joint 'elbow_flex'\)"):
                for n in range(reader.config.max_missed_reads + 2):
                    reader.read(0.1)
            print(f"\n{arm}: DeviceError after {n + 1} reads with motor 3 gone")
            assert n + 1 <= reader.config.max_missed_reads
        finally:
            reader.close()


def test_open_names_a_missing_motor_and_a_wrong_model():
    with DynamixelEmulator((1, 2, 3, 4, 5), "xl330-m288") as emulator:
        reader = make_leader(KOCH, emulator)
        with pytest.raises(DeviceError, match=r"motor 6 \(joint 'gripper'\): no answer"):
            reader.open()
        assert not reader.bus.connected
    with DynamixelEmulator(KOCH.ids, "xl430-w250") as emulator:
        with pytest.raises(DeviceError, match=r"motor 1 .*xl430-w250.*configured xl330-m288"):
            make_leader(KOCH, emulator).open()


def test_open_lowers_the_dynamixel_position_gain_and_holds_the_leader_where_it_is():
    with DynamixelEmulator(KOCH.ids, "xl330-m288", initial_position=2100) as emulator:
        reader = make_leader(KOCH, emulator, position_p_gain=120)
        reader.open()
        try:
            assert [emulator.motor(i).read_register("Position P Gain") for i in KOCH.ids] == [120] * 6
            assert torques(emulator, KOCH.ids) == [1] * 6
            assert [emulator.motor(i).read_register("Goal Position") for i in KOCH.ids] == [2100] * 6
            cmd = reader.read(0.2)  # no follower state yet: it holds, nothing active
            assert cmd is not None and not cmd.active and np.all(cmd.deltas == 0)
        finally:
            reader.close()
        assert torques(emulator, KOCH.ids) == [0] * 6
        reader.close()  # twice is fine


def test_read_is_paced_without_spinning():
    with DynamixelEmulator(KOCH.ids, "xl330-m288") as emulator:
        reader = make_leader(KOCH, emulator, read_period_s=0.05)
        reader.open()
        try:
            start_cpu, start = time.process_time(), time.monotonic()
            results = [reader.read(0.2) for _ in range(10)]
            elapsed, cpu = time.monotonic() - start, time.process_time() - start_cpu
            assert all(r is not None for r in results)
            assert 0.4 <= elapsed < 0.7  # 10 reads, one per 50 ms slot
            assert cpu < 0.5 * elapsed
            assert reader.read(0.001) is None  # the next slot is beyond this timeout
        finally:
            reader.close()


def test_calibration_of_another_arm_is_refused():
    with pytest.raises(CalibrationError):
        LeaderArmReader(LeaderArmConfig(arm="koch"), KOCH, make_bus("/dev/null", ArmCalibration.from_dict(
            {"model": "xl330", "joints": [j for j in dry_run_calibration(KOCH).to_dict()["joints"][:5]]})))
