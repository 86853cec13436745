"""The real-arm driver over the servo emulators, through the real SDKs.

``RealArm`` in process (homing, end-effector commands through IK, the safe stop with a motor
gone) and ``arm_driver`` as a process on real DDS: the bridge's topics and reset service,
lifecycle transitions, R4 (SIGINT / SIGTERM / a motor that stops answering: every other motor
torque-off within 1 s, the port closed, the failing motor named), refusal of a wrong arm.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "test"))
from hilserl_testing import Output, home_real_arm, isolated_environment, wait_for  # noqa: E402

from hilserl_drivers.arms import KOCH, SO101, dry_run_calibration  # noqa: E402
from hilserl_drivers.bus_emulator import DynamixelEmulator, FeetechEmulator  # noqa: E402
from hilserl_drivers.motor_bus import CalibrationError, JointCalibration, ArmCalibration, make_bus  # noqa: E402
from hilserl_drivers.real_arm import RealArm  # noqa: E402

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("scservo_sdk")

EMULATORS = {"so101": (SO101, FeetechEmulator), "koch": (KOCH, DynamixelEmulator)}
SPEED = 3000.0  # ticks/s: an STS3215 at full speed is about 3400
TORQUE = "Torque Enable"


def torques(emulator, ids) -> list[int]:
    return [emulator.motor(i).read_register(TORQUE) for i in ids]


@pytest.fixture(params=sorted(EMULATORS))
def rig(request):
    spec, emulator_cls = EMULATORS[request.param]
    emulator = emulator_cls(spec.ids, spec.model, speed=SPEED).start()
    bus = make_bus(emulator.port, dry_run_calibration(spec), packet_timeout_s=0.02)
    arm = RealArm(spec, bus)
    bus.connect()
    yield spec, emulator, arm
    arm.safe_stop()
    emulator.close()


def test_homing_reaches_the_home_pose_and_forward_kinematics_agrees(rig):
    spec, emulator, arm = rig
    first = arm.read()
    assert np.allclose(first.position, 0.0, atol=1e-9)  # the emulator starts every motor at 2048
    assert torques(emulator, spec.ids) == [0] * 6
    home_real_arm(arm)
    reading = arm.read()
    assert np.all(np.abs(reading.position - arm.home) <= arm.home_tolerance)
    assert np.linalg.norm(reading.ee_position - arm.home_ee) < 0.01  # FK of the measured joints
    assert reading.gripper_opening == pytest.approx(1.0, abs=0.05)
    assert torques(emulator, spec.ids) == [1] * 6


def test_commands_before_homing_are_held(rig):
    spec, emulator, arm = rig
    arm.read()
    arm.hold_here()
    goals = [emulator.motor(i).read_register("Goal Position") for i in spec.ids]
    assert arm.step([1, 0, 0, 0, 0, 0], 1) is False
    time.sleep(0.05)
    assert [emulator.motor(i).read_register("Goal Position") for i in spec.ids] == goals


def test_end_effector_commands_move_within_the_step_and_the_box(rig):
    spec, emulator, arm = rig
    home_real_arm(arm)
    limits = spec.limits
    previous = arm.target.position.copy()
    for k in range(40):  # push toward +x, +y, -z beyond the box, then back
        direction = 1.0 if k < 25 else -1.0
        arm.read()
        assert arm.step([direction, direction, -direction, 0, 0, 0], -1) is False
        step = np.abs(arm.target.position - previous)
        assert np.all(step <= limits.max_step_translation + 1e-9)
        assert limits.contains(arm.target.position)
        previous = arm.target.position.copy()
        time.sleep(0.03)
    for _ in range(50):  # let the motors arrive
        time.sleep(0.02)
        reading = arm.read()
    # the commanded pose is reached (IK + servo) and the gripper closed
    assert np.linalg.norm(reading.ee_position - arm.target.position) < 0.01
    assert limits.contains(reading.ee_position, margin=0.005)
    assert reading.gripper_opening == pytest.approx(0.0, abs=0.05)


def test_a_malformed_command_is_rejected_and_held(rig):
    spec, emulator, arm = rig
    home_real_arm(arm)
    goals = arm.goal.copy()
    assert arm.step([float("nan"), 0, 0, 0, 0, 0], 0) is True
    assert arm.step([0, 0, 0], 0) is True
    assert arm.step([0, 0, 0, 0, 0, 0], 7) is True
    assert np.array_equal(arm.goal, goals)


def test_safe_stop_reaches_every_other_motor_when_one_is_gone(rig):
    spec, emulator, arm = rig
    home_real_arm(arm)
    emulator.set_fault("disappear", ids=3)
    problems = arm.safe_stop("torque_off")
    assert len(problems) == 1 and "motor 3" in problems[0] and "elbow_flex" in problems[0]
    assert torques(emulator, [1, 2, 4, 5, 6]) == [0] * 5
    assert not arm.bus.connected


def test_safe_stop_hold_keeps_torque_and_the_measured_pose(rig):
    spec, emulator, arm = rig
    home_real_arm(arm)
    reading = arm.read()
    assert arm.safe_stop("hold") == []
    assert torques(emulator, spec.ids) == [1] * 6
    expected = arm.bus.calibration.radians_to_ticks(reading.position)

    def goals() -> np.ndarray:
        return np.array([emulator.motor(i).read_register("Goal Position") for i in spec.ids])

    # a sync write has no status packet: wait until the emulator has taken it
    assert wait_for(lambda: np.allclose(goals(), expected, atol=1.0), 2.0), (goals(), expected)


def test_a_calibration_for_another_arm_is_refused():
    calibration = dry_run_calibration(SO101)
    renamed = ArmCalibration(calibration.model, tuple(
        JointCalibration(**{**j.__dict__, "name": "pan" if j.name == "shoulder_pan" else j.name})
        for j in calibration.joints))
    with pytest.raises(CalibrationError, match="do not match the so101 arm"):
        RealArm(SO101, make_bus("/dev/null", renamed))
    with pytest.raises(CalibrationError, match="dynamixel servo; the so101 arm is on a feetech bus"):
        RealArm(SO101, make_bus("/dev/null", dry_run_calibration(SO101, model="xl330")))


# ------------------------------------------------------------------- the node process
def start_driver(domain_id: int, emulator, tmp_path, arm: str, *extra: str) -> tuple[subprocess.Popen, Output]:
    spec = EMULATORS[arm][0]
    calibration = tmp_path / f"{arm}_calibration.yaml"
    if not calibration.exists():
        dry_run_calibration(spec).save(calibration)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hilserl_drivers.arm_driver_node", "--ros-args", "-p", f"arm:={arm}",
         "-p", f"port:={emulator.port}", "-p", f"calibration:={calibration}", "-p", "report_period_s:=1.0", *extra],
        env=isolated_environment(domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, Output(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("arm", sorted(EMULATORS))
def test_r4_a_signal_with_a_failing_motor_torques_off_every_other_motor_within_a_second(
        ros_domain_id, tmp_path, arm, sig):
    spec, emulator_cls = EMULATORS[arm]
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        proc, out = start_driver(ros_domain_id, emulator, tmp_path, arm)
        try:
            assert wait_for(lambda: out.find("active: torque on"), 30.0), out.tail()
            assert torques(emulator, spec.ids) == [1] * 6
            emulator.set_fault("disappear", ids=3)  # its torque-off write will fail
            start = time.monotonic()
            proc.send_signal(sig)
            assert wait_for(lambda: torques(emulator, [1, 2, 4, 5, 6]) == [0] * 5, 5.0)
            elapsed = time.monotonic() - start
            rc = proc.wait(timeout=10.0)
            print(f"{arm} {signal.Signals(sig).name}: every answering motor torque-off after {elapsed:.3f} s, "
                  f"exit {rc}")
            assert elapsed < 1.0
            assert rc == 0, out.tail()
            assert out.find(r"stop \(torque off\): .*motor 3 \(joint 'elbow_flex'\)"), out.tail()
            assert not out.find("Traceback"), out.tail()
        finally:
            stop(proc)


@pytest.mark.parametrize("arm", sorted(EMULATORS))
def test_r4_a_motor_that_stops_answering_ends_the_driver_safely_naming_it(ros_domain_id, tmp_path, arm):
    spec, emulator_cls = EMULATORS[arm]
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        proc, out = start_driver(ros_domain_id, emulator, tmp_path, arm, "-p", "max_missed_reads:=3")
        try:
            assert wait_for(lambda: out.find("active: torque on"), 30.0), out.tail()
            start = time.monotonic()
            emulator.set_fault("disappear", ids=5)
            assert wait_for(lambda: torques(emulator, [1, 2, 3, 4, 6]) == [0] * 5, 5.0)
            elapsed = time.monotonic() - start
            rc = proc.wait(timeout=10.0)
            assert rc == 3, out.tail()
            # three missed ticks at 10 Hz, then the stop
            assert elapsed < 1.0, elapsed
            assert out.find(r"servo bus failed: .*motor 5 \(joint 'wrist_roll'\) missed 3 consecutive reads"), out.tail()
        finally:
            stop(proc)


def test_a_wrong_servo_model_is_refused_at_configure_naming_the_motor(ros_domain_id, tmp_path):
    ids = KOCH.ids
    # an arm built with XL430s; the calibration says XL330 (the koch default)
    with DynamixelEmulator(ids, "xl430", speed=SPEED) as emulator:
        proc, out = start_driver(ros_domain_id, emulator, tmp_path, "koch")
        try:
            rc = proc.wait(timeout=30.0)
            assert rc == 2, out.tail()
            assert out.find(r"motor 1 \(joint 'shoulder_pan'\): model number 1060 \(xl430-w250\), configured "
                            r"xl330-m288"), out.tail()
            assert torques(emulator, ids) == [0] * 6  # nothing enabled
        finally:
            stop(proc)


def test_the_driver_serves_the_bridges_topics_reset_and_commands(ros, tmp_path):
    from geometry_msgs.msg import PoseStamped
    from hilserl_msgs.msg import Action, Reward, Topics
    from hilserl_msgs.srv import ResetEpisode
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState

    spec, emulator_cls = EMULATORS["so101"]
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        # the emulator shares this process (and its GIL) with the test's executor: allow it 0.1 s
        proc, out = start_driver(ros.domain_id, emulator, tmp_path, "so101", "-p", "packet_timeout_s:=0.1")
        try:
            node = ros.node("driver_client")
            frames: dict[int, dict] = {}

            def keep(part):
                def on(msg):
                    stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                    frames.setdefault(stamp, {})[part] = msg
                return on

            node.create_subscription(JointState, Topics.JOINT_STATES, keep("joints"), reliable)
            node.create_subscription(PoseStamped, Topics.EE_POSE, keep("ee"), reliable)
            node.create_subscription(Reward, Topics.REWARD, keep("reward"), reliable)
            commands = node.create_publisher(Action, Topics.COMMAND, 10)
            reset = node.create_client(ResetEpisode, Topics.RESET_EPISODE)
            assert wait_for(lambda: out.find("active: torque on") and reset.service_is_ready(), 30.0), out.tail()
            future = reset.call_async(ResetEpisode.Request())
            assert wait_for(future.done, 20.0), out.tail()
            assert future.result().success, future.result().message
            assert future.result().episode_id == 1
            complete = [f for f in frames.values() if len(f) == 3]
            assert len(complete) >= 5  # every frame: joint_states, ee_pose and reward with one stamp
            last = max((s for s, f in frames.items() if len(f) == 3))
            joints = frames[last]["joints"]
            assert list(joints.name) == list(spec.joints)
            assert len(joints.velocity) == 6 and len(joints.effort) == 6
            assert frames[last]["reward"].reward == 0.0 and not frames[last]["reward"].success
            start_x = frames[last]["ee"].pose.position.x
            for _ in range(15):  # +x at full speed: 15 mm per tick
                commands.publish(Action(linear=Action().linear.__class__(x=1.0), gripper=0))
                time.sleep(0.1)
            time.sleep(0.5)
            last = max((s for s, f in frames.items() if len(f) == 3))
            moved = frames[last]["ee"].pose.position.x - start_x
            assert 0.04 < moved <= spec.limits.position_high[0] - start_x + 0.005, moved
            assert wait_for(lambda: out.find(r"\d+ commands"), 5.0)
        finally:
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10.0) == 0, out.tail()
            stop(proc)
        assert torques(emulator, spec.ids) == [0] * 6


def test_lifecycle_transitions_enable_and_disable_torque(ros, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    spec, emulator_cls = EMULATORS["koch"]
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        proc, out = start_driver(ros.domain_id, emulator, tmp_path, "koch", "-p", "autostart:=false",
                                 "-p", "packet_timeout_s:=0.1")
        try:
            node = ros.node("lifecycle_client")
            client = node.create_client(ChangeState, "/arm_driver/change_state")
            assert wait_for(client.service_is_ready, 30.0), out.tail()

            def transition(tid: int) -> bool:
                future = client.call_async(ChangeState.Request(transition=Transition(id=tid)))
                assert wait_for(future.done, 10.0)
                return future.result().success

            assert torques(emulator, spec.ids) == [0] * 6
            assert transition(Transition.TRANSITION_CONFIGURE)
            assert torques(emulator, spec.ids) == [0] * 6  # configured: pinged, nothing enabled
            assert transition(Transition.TRANSITION_ACTIVATE)
            assert torques(emulator, spec.ids) == [1] * 6
            assert transition(Transition.TRANSITION_DEACTIVATE)
            assert torques(emulator, spec.ids) == [0] * 6
            assert transition(Transition.TRANSITION_ACTIVATE)
            assert torques(emulator, spec.ids) == [1] * 6
            assert transition(Transition.TRANSITION_DEACTIVATE)
            assert transition(Transition.TRANSITION_CLEANUP)
            assert out.find("stopped: torque off on every motor, port closed"), out.tail()
            assert transition(Transition.TRANSITION_CONFIGURE)  # the port opens again
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10.0) == 0, out.tail()
            stop(proc)
        assert torques(emulator, spec.ids) == [0] * 6


@pytest.mark.parametrize("fault, named", [
    ("hardware_error", r"hardware error reported by motor 2 \(joint 'shoulder_lift'\)"),
    ("corrupt_checksum", r"motor 2 \(joint 'shoulder_lift'\) missed 3 consecutive reads \(.*corrupt"),
    ("no_reply", r"motor 2 \(joint 'shoulder_lift'\) missed 3 consecutive reads \(no status packet"),
])
def test_every_injected_fault_stops_the_arm_naming_the_motor(ros_domain_id, tmp_path, fault, named):
    spec, emulator_cls = EMULATORS["koch"]
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        proc, out = start_driver(ros_domain_id, emulator, tmp_path, "koch")
        try:
            assert wait_for(lambda: out.find("active: torque on"), 30.0), out.tail()
            emulator.set_fault(fault, ids=2)
            assert proc.wait(timeout=10.0) == 3, out.tail()
            assert out.find(r"servo bus failed: .*" + named), out.tail()
            # motor 2 executes the torque-off write in every one of these faults
            assert torques(emulator, spec.ids) == [0] * 6
        finally:
            stop(proc)


def test_a_slow_bus_within_the_tick_keeps_running_and_a_slower_one_stops(ros_domain_id, tmp_path):
    spec, emulator_cls = EMULATORS["so101"]
    with emulator_cls(spec.ids, spec.model, speed=SPEED) as emulator:
        proc, out = start_driver(ros_domain_id, emulator, tmp_path, "so101", "-p", "packet_timeout_s:=0.03")
        try:
            assert wait_for(lambda: out.find("active: torque on"), 30.0), out.tail()
            emulator.reply_delay_s = 0.005  # 5 ms per status packet: within the tick
            before = len(out.find(r"\[arm_driver\].* ticks"))
            assert wait_for(lambda: len(out.find(r"ticks, \d+ frames")) >= before + 2, 10.0), out.tail()
            assert proc.poll() is None
            # beyond the packet timeout: reads go stale; late answers may still come in between
            emulator.reply_delay_s = 0.2
            assert proc.wait(timeout=10.0) == 3, out.tail()
            assert out.find(r"servo bus failed: .*(missed 3 consecutive reads|\d of the last 10 reads were stale)"), \
                out.tail()
        finally:
            stop(proc)


@pytest.mark.parametrize("arm", sorted(EMULATORS))
def test_the_arm_config_files_agree_with_the_driver(arm):
    """config/arm_<arm>.yaml gives the safety limiter the driver's own box and steps, and the actor
    and learner the driver's gripper positions: a mismatch would clamp twice differently."""
    import yaml

    spec = EMULATORS[arm][0]
    config = yaml.safe_load((Path(__file__).resolve().parents[3] / "config" / f"arm_{arm}.yaml").read_text())
    limiter = config["safety_limiter"]["ros__parameters"]
    limits = spec.limits
    assert limiter["bounds_low"] == list(limits.position_low)
    assert limiter["bounds_high"] == list(limits.position_high)
    assert limiter["rpy_low"] == list(limits.rpy_low) and limiter["rpy_high"] == list(limits.rpy_high)
    assert limiter["max_step_translation"] == limits.max_step_translation
    assert limiter["max_step_rotation"] == limits.max_step_rotation
    for node in ("actor", "learner"):
        params = config[node]["ros__parameters"]
        assert params["gripper_closed_position"] == spec.gripper_closed
        assert params["gripper_open_position"] == spec.gripper_open
    assert config["arm_driver"]["ros__parameters"]["arm"] == arm
