"""Safety limiter node over real DDS, in front of the real MuJoCo bridge.

R2: 10k bad commands through the limiter into the lock-step bridge; R1: the command stream
goes silent for 200 ms mid-motion in front of the realtime bridge; parameters take effect
when set through the parameter service from a second node, the bounds are read-only.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hilserl_msgs.msg import Action, Reward, Topics  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hilserl_drivers.safety_limiter_node import SafetyLimiterNode  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


class Driver:
    """Test node: publishes executed actions, records commands and the bridge's frames."""

    def __init__(self, ros):
        self.node = ros.node("limiter_test_driver")
        self.lock = threading.Lock()
        self.commands: list[Action] = []
        self.rewards: list[Reward] = []
        self.joints: list[JointState] = []
        self.ee: list[tuple[int, np.ndarray]] = []
        self.pub = self.node.create_publisher(Action, Topics.EXECUTED_ACTION, RELIABLE)
        self.node.create_subscription(Action, Topics.COMMAND, self._keep(self.commands), RELIABLE)
        self.node.create_subscription(Reward, Topics.REWARD, self._keep(self.rewards), RELIABLE)
        self.node.create_subscription(JointState, Topics.JOINT_STATES, self._keep(self.joints), RELIABLE)
        self.node.create_subscription(PoseStamped, Topics.EE_POSE, self._on_ee, RELIABLE)

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append(msg)
        return callback

    def _on_ee(self, msg):
        p = msg.pose.position
        with self.lock:
            self.ee.append((_ns(msg.header.stamp), np.array([p.x, p.y, p.z])))

    def count(self, store) -> int:
        with self.lock:
            return len(store)

    def send(self, linear=(0.0, 0.0, 0.0), gripper=0, stamp_ns=None, source=Action.SOURCE_POLICY,
             intervention=False) -> int:
        msg = Action()
        stamp_ns = self.node.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
        msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in linear)
        msg.gripper = int(gripper)
        msg.source = source
        msg.intervention = intervention
        self.pub.publish(msg)
        return stamp_ns


def _bridge(ros, **params):
    from hilserl_sim.sim_bridge_node import SimBridgeNode

    overrides = [Parameter(k, value=v) for k, v in {"cameras": [], "seed": 3, **params}.items()]
    return ros.add(SimBridgeNode(context=ros.context, parameter_overrides=overrides))


def _limiter(ros, **params) -> SafetyLimiterNode:
    overrides = [Parameter(k, value=v) for k, v in params.items()]
    return ros.add(SafetyLimiterNode(context=ros.context, parameter_overrides=overrides))


def _joint_ranges(bridge):
    from hilserl_sim.scenes import ARM_PREFIX

    sim = bridge.env.sim
    names = sim.joint_names[: len(sim.arm.arm_joints)]
    ranges = np.array([sim.model.jnt_range[sim.model.joint(ARM_PREFIX + n).id] for n in names])
    return names, ranges


def test_r2_ten_thousand_bad_commands_never_reach_the_bridge(ros):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    bridge = _bridge(ros, mode="lockstep")
    # ages far apart from the test's own pace, so a slow, shared machine cannot make an
    # out-of-order stamp (1 ms before the last good one) look stale
    limiter = _limiter(ros, max_command_age=3.0, pose_timeout=3.0, log_throttle_s=1.0)
    driver = Driver(ros)
    assert wait_for(lambda: driver.pub.get_subscription_count() >= 1
                    and limiter.count_subscribers(Topics.COMMAND) >= 2, 10.0)
    # The bridge published its first frame before anyone listened: the first command finds no
    # pose (hold) and its frame gives the limiter one; counting starts after it.
    driver.send((0.0, 0.0, 0.0))
    assert wait_for(lambda: driver.count(driver.rewards) >= 1 and limiter.limiter.pose is not None, 10.0)
    baseline = dict(limiter.limiter.rejections)
    rng = np.random.default_rng(2)
    kinds = ["nan", "inf", "-inf", "1e6", "-1e6", "gripper", "stale", "future", "out_of_order"]
    reason_of = {"nan": "malformed", "inf": "malformed", "-inf": "malformed", "1e6": "out_of_range",
                 "-1e6": "out_of_range", "gripper": "bad_gripper", "stale": "stale", "future": "future",
                 "out_of_order": "out_of_order"}
    expected = dict(baseline)
    n_bad, sent, good, last_good = 10_000, 1, 0, None
    _, ranges = _joint_ranges(bridge)
    worst_joint_margin = math.inf
    t0 = time.monotonic()
    bad = 0
    while bad < n_bad:
        rewards_before = driver.count(driver.rewards)
        if sent % 5 == 0 or last_good is None:
            # a good command between the bad ones (random or saturated) keeps the arm moving into the walls
            move = rng.uniform(-1, 1, 3) if good % 2 else np.sign(rng.uniform(-1, 1, 3))
            last_good = driver.send(move, gripper=int(rng.integers(-1, 2)))
            good += 1
        else:
            kind = kinds[bad % len(kinds)]
            now = driver.node.get_clock().now().nanoseconds
            linear, gripper, stamp = [0.0, 0.0, 0.0], 0, None
            if kind in ("nan", "inf", "-inf", "1e6", "-1e6"):
                linear[bad % 3] = float(kind)
            elif kind == "gripper":
                gripper = 5
            elif kind == "stale":
                stamp = now - 10_000_000_000
            elif kind == "future":
                stamp = now + 10_000_000_000
            else:
                stamp = last_good - 1_000_000 * (bad % 2)  # a duplicate or an older stamp
            driver.send(linear, gripper=gripper, stamp_ns=stamp)
            expected[reason_of[kind]] += 1
            bad += 1
        sent += 1
        # a frame comes back in a few ms: poll at 1 ms, or the 12.5k round trips wait out the 10 ms default
        assert wait_for(lambda: driver.count(driver.rewards) > rewards_before, 10.0, interval=0.001), \
            f"no frame after {sent}"
        if sent % 250 == 0:
            with driver.lock:
                q = np.array(driver.joints[-1].position[: len(ranges)])
            worst_joint_margin = min(worst_joint_margin, float(np.min(np.minimum(q - ranges[:, 0],
                                                                                 ranges[:, 1] - q))))
    elapsed = time.monotonic() - t0
    assert wait_for(lambda: driver.count(driver.commands) >= sent, 5.0)
    with driver.lock:
        commands = list(driver.commands)
        joints = list(driver.joints)
    for q_msg in joints:
        q = np.array(q_msg.position[: len(ranges)])
        worst_joint_margin = min(worst_joint_margin, float(np.min(np.minimum(q - ranges[:, 0], ranges[:, 1] - q))))
    deltas = np.array([[c.linear.x, c.linear.y, c.linear.z, c.angular.x, c.angular.y, c.angular.z]
                       for c in commands])
    holds = sum(1 for c, d in zip(commands, deltas) if not np.any(d) and c.gripper == 0)
    rejections = dict(limiter.limiter.rejections)
    # node-level R3 on the good commands among them: measured end effector vs box and step limit
    with driver.lock:
        ee = np.array([p for _, p in driver.ee])
    lim = limiter.limiter.config.limits
    outside = np.max(np.maximum(np.asarray(lim.position_low) - ee, ee - np.asarray(lim.position_high)), axis=1)
    worst_out = float(max(outside.max(), 0.0))
    worst_step = float(np.max(np.abs(np.diff(ee, axis=0))))
    print(f"R2: {n_bad} bad + {good} good commands in {elapsed:.1f} s ({sent / elapsed:.0f}/s); "
          f"{len(commands)} commands reached the bridge, all finite and within [-1, 1]; "
          f"bridge rejected {bridge.rejected_commands}; rejections {rejections}; "
          f"worst joint margin to its limit {worst_joint_margin:.3f} rad; {holds} holds; "
          f"R3 (node level, {good} good commands): worst outside box {worst_out * 1e3:.2f} mm, worst "
          f"measured step {worst_step * 1e3:.2f} mm (limit {lim.max_step_translation * 1e3:.0f} mm), "
          f"{limiter.limiter.clamped} clamped")
    assert len(commands) == sent  # one command per executed action, nothing lost, nothing extra
    assert np.all(np.isfinite(deltas)) and np.all(np.abs(deltas) <= 1.0)
    assert all(c.gripper in (-1, 0, 1) for c in commands)
    assert bridge.rejected_commands == 0  # nothing malformed reached the bridge
    assert rejections == expected
    assert holds >= n_bad
    assert worst_joint_margin > 0.0
    assert worst_out <= 0.012  # 5 mm in free motion; pressing on the table the servos yield (docs/sim.md)
    assert worst_step <= lim.max_step_translation + 0.005
    # still alive and still passing good commands
    rewards_before = driver.count(driver.rewards)
    driver.send((0.0, 0.0, -1.0))
    assert wait_for(lambda: driver.count(driver.rewards) > rewards_before, 5.0)
    assert wait_for(lambda: driver.count(driver.commands) == sent + 1, 5.0)
    assert driver.commands[-1].linear.z < 0.0


def test_r1_silence_mid_motion_holds_within_two_mm(ros):
    """R1: commands every period while moving, then 200 ms of silence, then hold commands.

    Commands are sent 60 ms into each period (an actor's latency), so each tick of the
    realtime bridge sees a fresh command. Asserted: the drift from the position two control
    periods after the last command on (R1: <= 2 mm; the bridge's watchdog never executes a
    command older than 0.15 s, so a late tick cannot move the arm after that), and that the
    motion ends no further than the commanded path (each delta executed at most once). Reported
    only: the deceleration after the frame that executed the last command (servo catching up;
    on a loaded machine a late tick may execute it in the silence, or drop moves).
    """
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    bridge = _bridge(ros, mode="realtime", control_rate_hz=10.0, command_timeout=0.15)
    limiter = _limiter(ros, command_timeout=0.15, max_command_age=0.5)
    driver = Driver(ros)
    assert wait_for(lambda: driver.pub.get_subscription_count() >= 1 and driver.count(driver.ee) >= 3, 10.0)
    step = bridge.params.max_step_translation
    period_ns = int(1e9 / bridge.params.control_rate_hz)

    def after_next_frame(delay: float) -> None:
        count = driver.count(driver.ee)
        assert wait_for(lambda: driver.count(driver.ee) > count, 2.0)
        time.sleep(delay)

    for _ in range(8):  # settle
        after_next_frame(0.06)
        with driver.lock:
            start = driver.ee[-1][1]
        driver.send((0.0, 0.0, 0.0))
    moves = 6
    for _ in range(moves):
        after_next_frame(0.06)
        last_stamp = driver.send((0.0, 0.5, 0.0))
    assert wait_for(lambda: limiter.published == 8 + moves, 1.0)
    silences_before = limiter.silences  # a loaded machine may have let the stream pause before
    time.sleep(0.2)  # silence
    assert limiter.published == 8 + moves  # the limiter sent nothing meanwhile
    for _ in range(8):
        after_next_frame(0.06)
        driver.send((0.0, 0.0, 0.0))
    after_next_frame(0.0)
    with driver.lock:
        frames = list(driver.ee)
    first = next(i for i, (stamp, _) in enumerate(frames) if stamp > last_stamp)  # executed the last move
    ref = next(i for i, (stamp, _) in enumerate(frames) if stamp >= last_stamp + 2 * period_ns)
    silence = [p for stamp, p in frames[first:] if stamp <= last_stamp + 2 * period_ns]
    deceleration = max(float(np.linalg.norm(p - frames[first][1])) for p in silence)
    drift = max(float(np.linalg.norm(p - frames[ref][1])) for _, p in frames[ref:])
    expected = start + np.array([0.0, moves * 0.5 * step, 0.0])
    off_path = frames[-1][1] - expected
    overshoot = float(off_path[1])  # beyond the commanded end point along the motion
    print(f"R1: {moves} moves of {0.5 * step * 1e3:.1f} mm then 200 ms silence: deceleration after the last "
          f"executed step {deceleration * 1e3:.2f} mm, drift from 2 periods on {drift * 1e3:.2f} mm over "
          f"{len(frames) - ref} frames, end point beyond the commanded one by {overshoot * 1e3:.2f} mm (x, y, z off by "
          f"{np.round(off_path * 1e3, 2).tolist()} mm); "
          f"limiter silences {limiter.silences}")
    assert limiter.silences >= silences_before + 1  # the silence was seen (and logged)
    assert drift <= 0.002
    assert overshoot <= 0.002  # a delta re-applied in the silence (issue 7, fixed in the bridge) adds 12.5 mm


def test_parameters_take_effect_through_the_parameter_service_and_bounds_are_read_only(ros):
    limiter = _limiter(ros, pose_timeout=0.0)
    driver = Driver(ros)
    client = driver.node.create_client(SetParameters, "/safety_limiter/set_parameters")
    assert wait_for(client.service_is_ready, 10.0)
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.5, 0.0, 0.2
    ee_pub = driver.node.create_publisher(PoseStamped, Topics.EE_POSE, RELIABLE)
    assert wait_for(lambda: ee_pub.get_subscription_count() >= 1 and driver.pub.get_subscription_count() >= 1, 10.0)
    ee_pub.publish(pose)
    assert wait_for(lambda: limiter.limiter.pose is not None, 5.0)

    def set_params(**values):
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        future = client.call_async(request)
        assert wait_for(future.done, 5.0)
        return future.result().results

    driver.send((1.0, 0.0, 0.0))
    assert wait_for(lambda: driver.count(driver.commands) == 1, 5.0)
    assert driver.commands[0].linear.x == pytest.approx(1.0)
    [result] = set_params(max_delta=0.3)
    assert result.successful, result.reason
    driver.send((1.0, 0.0, 0.0))
    assert wait_for(lambda: driver.count(driver.commands) == 2, 5.0)
    assert driver.commands[1].linear.x == pytest.approx(0.3)  # applied to the very next command
    [bad] = set_params(max_delta=1.5)
    assert not bad.successful
    [read_only] = set_params(bounds_low=[0.0, 0.0, 0.0])
    assert not read_only.successful
    assert limiter.limiter.config.limits.position_low == (0.3, -0.3, 0.015)
    assert limiter.get_parameter("max_delta").value == pytest.approx(0.3)


def test_bad_bounds_fail_naming_the_parameter(ros):
    with pytest.raises(ValueError, match="bounds_low"):
        SafetyLimiterNode(context=ros.context, parameter_overrides=[Parameter("bounds_low", value=[0.9, 0.0, 0.0])])
    with pytest.raises(ValueError, match="bounds_high"):
        SafetyLimiterNode(context=ros.context, parameter_overrides=[Parameter("bounds_high", value=[0.9, 0.0])])
