"""The real-arm driver: a lifecycle node with the MuJoCo bridge's topics and reset service.

Publishes ``joint_states`` (position rad, velocity rad/s, effort: A or normalised load),
``ee_pose`` (forward kinematics of the arm's MJCF, base frame) and ``hilserl/reward`` (last,
same stamp: the frame that the actor assembles); consumes ``hilserl/command`` (from the safety
limiter) and serves ``hilserl/reset_episode`` (homing). Names from ``hilserl_msgs/Topics``.

Lifecycle (``ros2 lifecycle set /arm_driver configure`` etc., or ``autostart: true``):

- configure: load and check the calibration, open the port, ping every motor and check its
  model number (a missing motor or another model is refused, naming it; nothing is enabled);
- activate: read the arm, make the measured positions the goals, then torque on (the arm does
  not move), and start the control timer; commands are refused until the first reset homes
  the arm;
- deactivate: stop the timer, torque off (or hold: ``on_stop``);
- cleanup / shutdown: the same, then close the port.

Every tick (``control_rate_hz``): one sync read; then the newest command not older than
``command_timeout`` is executed once (end-effector deltas -> ``ee_control`` -> IK -> one sync
write); otherwise the goals stay (hold). A reset homes the arm with ticks of its own, run in
the service callback, and answers at the home pose. A tick whose read is stale publishes no
frame. A tick that overruns its period, starts half a period late or publishes no frame is a
missed deadline; the progress line every ``report_period_s`` counts them.

R4 (docs/drivers.md): on an exception, SIGINT or SIGTERM every motor is torqued off (or held)
and the port closed, a failing motor not stopping the others; a motor that stops answering or
reports a hardware error, or a bus whose reads keep going stale, ends the node (exit 3) with an
error naming it, after the same stop.

Reward: a real arm has no ground truth. ``reward_source: topic`` relays the newest
``Reward`` on ``reward_topic`` (the reward classifier, remapped, or a person) with the frame's
stamp if it is not older than ``reward_timeout_s``; ``none`` publishes reward 0 (an episode
then ends at its time limit; source HUMAN: nobody said success).
"""

from __future__ import annotations

import collections
import importlib.util
import sys
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import Action, Observation, Reward, Topics
from hilserl_msgs.srv import ResetEpisode
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from sensor_msgs.msg import JointState

from hilserl_drivers.arms import ARMS, arm_spec
from hilserl_drivers.driver_msgs import COMMANDS, FRAMES, SERVICE_QOS, joint_state_message, pose_message
from hilserl_drivers.motor_bus import ArmCalibration, CalibrationError, MotorBusError, make_bus
from hilserl_drivers.node_main import declare_parameters, run_node, stop_requested
from hilserl_drivers.real_arm import STOP_MODES, TORQUE_TRIES, RealArm



class DriverStartError(RuntimeError):
    """The driver could not start (its log line above says why)."""
IK_BACKENDS = ("mink", "moveit")
REWARD_SOURCES = ("none", "topic")


def _fixed(description: str, **kw) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True, **kw)


def _floats(low: float, high: float) -> dict:
    return {"floating_point_range": [FloatingPointRange(from_value=low, to_value=high)]}


PARAMETERS = {
    "arm": ("so101", _fixed(f"which arm: {', '.join(sorted(ARMS))} (hilserl_drivers.arms)")),
    "port": ("", _fixed("serial port of the servo bus, e.g. /dev/ttyACM0 (or an emulator's pty)")),
    "calibration": ("", _fixed("calibration YAML written by calibrate_arm (homing offsets, directions, ranges)")),
    "baud_rate": (1_000_000, _fixed("bus baud rate", integer_range=[IntegerRange(from_value=9600,
                                                                                 to_value=4_500_000)])),
    "mjcf": ("", _fixed("kinematic model of the arm; empty: the one shipped for `arm`")),
    "control_rate_hz": (10.0, _fixed("control ticks per second", **_floats(1.0, 200.0))),
    "command_timeout": (0.15, _fixed("a command older than this (s) is not executed: hold", **_floats(0.001, 10.0))),
    "packet_timeout_s": (0.02, _fixed("wait for a status packet beyond its transmission time (s)",
                                      **_floats(0.001, 1.0))),
    "read_tries": (2, _fixed("sync reads per tick at most (retries of motors that did not answer)",
                             integer_range=[IntegerRange(from_value=1, to_value=10)])),
    "max_missed_reads": (3, _fixed("consecutive ticks a motor may miss before the driver stops and names it",
                                   integer_range=[IntegerRange(from_value=1, to_value=100)])),
    "max_stale_in_10": (5, _fixed("stale reads among the last 10 ticks at which the driver stops (a bus that answers "
                                  "only now and then)", integer_range=[IntegerRange(from_value=1, to_value=10)])),
    "on_stop": ("torque_off", _fixed(f"on deactivate, error or signal: {' | '.join(STOP_MODES)}")),
    "autostart": (True, _fixed("configure and activate at start (false: wait for lifecycle transitions)")),
    "ik_backend": ("mink", _fixed(f"end-effector IK: {' | '.join(IK_BACKENDS)} (moveit needs moveit_py)")),
    "ik_iterations": (3, _fixed("IK iterations per tick", integer_range=[IntegerRange(from_value=1, to_value=50)])),
    "home_joint_step": (0.05, _fixed("largest joint goal change per tick while homing (rad)", **_floats(1e-3, 1.0))),
    "home_tolerance": (0.03, _fixed("homing is done when every joint is this close to home (rad)",
                                    **_floats(1e-3, 0.5))),
    "reset_timeout_s": (20.0, _fixed("a reset that has not reached home after this long is refused",
                                     **_floats(0.5, 600.0))),
    "frame_id": ("base", _fixed("frame of ee_pose")),
    "reward_source": ("none", _fixed(f"{' | '.join(REWARD_SOURCES)}: where hilserl/reward comes from")),
    "reward_topic": ("hilserl/reward_in", _fixed("with reward_source topic: the Reward topic relayed")),
    "reward_timeout_s": (0.5, _fixed("a relayed reward older than this counts as none", **_floats(0.01, 60.0))),
    "report_period_s": (10.0, _fixed("seconds between progress lines", **_floats(0.5, 3600.0))),
}


def check_ik_backend(name: str) -> None:
    """mink is built in; moveit needs ``moveit_py`` (a ROS 2 install with MoveIt)."""
    if name not in IK_BACKENDS:
        raise ValueError(f"ik_backend must be one of {IK_BACKENDS}, got {name!r}")
    if name == "moveit":
        if importlib.util.find_spec("moveit") is None:  # moveit_py's module
            raise ValueError("ik_backend moveit needs the moveit_py package (MoveIt 2 on a ROS 2 install: "
                             "apt install ros-<distro>-moveit-py), which is not installed here; use "
                             "ik_backend mink")
        raise ValueError("ik_backend moveit: moveit_py is installed, but this driver drives it only through "
                         "mink so far; use ik_backend mink")


class ArmDriverNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("arm_driver", **kwargs)
        self.p = declare_parameters(self, PARAMETERS)
        self.spec = arm_spec(self.p["arm"])
        if self.p["on_stop"] not in STOP_MODES:
            raise ValueError(f"on_stop must be one of {STOP_MODES}, got {self.p['on_stop']!r}")
        if self.p["reward_source"] not in REWARD_SOURCES:
            raise ValueError(f"reward_source must be one of {REWARD_SOURCES}, got {self.p['reward_source']!r}")
        check_ik_backend(self.p["ik_backend"])
        self.period = 1.0 / self.p["control_rate_hz"]
        self.arm: RealArm | None = None
        self._timer = None
        self._command: Action | None = None
        self._command_time = 0.0
        self._reward: Reward | None = None
        self._reward_time = 0.0
        self.episode_id = 0
        self.counters = {"ticks": 0, "frames": 0, "overruns": 0, "late": 0, "stale": 0, "commands": 0,
                         "held": 0, "rejected": 0}
        self._last_tick: float | None = None
        self._recent_stale: collections.deque[bool] = collections.deque(maxlen=10)
        self._reported = time.monotonic()
        self._joint_pub = self.create_publisher(JointState, Topics.JOINT_STATES, FRAMES)
        self._ee_pub = self.create_publisher(PoseStamped, Topics.EE_POSE, FRAMES)
        self._reward_pub = self.create_publisher(Reward, Topics.REWARD, FRAMES)
        self.create_subscription(Action, Topics.COMMAND, self._on_command, COMMANDS)
        if self.p["reward_source"] == "topic":
            self.create_subscription(Reward, self.p["reward_topic"], self._on_reward, FRAMES)
        self.create_service(ResetEpisode, Topics.RESET_EPISODE, self._on_reset, qos_profile=SERVICE_QOS)
        self.get_logger().info(f"arm driver for {self.spec.name} on {self.p['port'] or '(no port)'}")
        if self.p["autostart"]:
            self._autostart()

    def _autostart(self) -> None:
        for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            result = trigger()
            if result != TransitionCallbackReturn.SUCCESS:
                raise DriverStartError(f"autostart: {name} failed (see the error above); the motors were left torque-off")

    # ------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = self.p
        try:
            if not p["port"]:
                raise ValueError("parameter port is empty: give the servo bus's serial port, e.g. /dev/ttyACM0")
            if not p["calibration"]:
                raise ValueError("parameter calibration is empty: calibrate the arm first (python -m "
                                 "hilserl_drivers.calibrate, or ros2 run hilserl_drivers calibrate_arm) and give its YAML")
            calibration = ArmCalibration.load(p["calibration"])
            bus = make_bus(p["port"], calibration, baud_rate=p["baud_rate"], packet_timeout_s=p["packet_timeout_s"],
                           read_tries=p["read_tries"], max_missed_reads=p["max_missed_reads"])
            arm = RealArm(self.spec, bus, mjcf=p["mjcf"], ik_iterations=p["ik_iterations"],
                          home_joint_step=p["home_joint_step"], home_tolerance=p["home_tolerance"])
            bus.connect()
        except (ValueError, OSError, CalibrationError, MotorBusError) as exc:
            self.get_logger().error(f"configure: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.arm = arm
        self.get_logger().info(f"configured: {len(calibration.ids)} {calibration.model} motors answer on {p['port']}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self.arm.read(deadline_s=self.period)
            self.arm.hold_here()
            self.arm.bus.set_torque(True, tries=TORQUE_TRIES)
        except (MotorBusError, OSError) as exc:
            self.get_logger().error(f"activate: {exc}; stopping")
            self._stop()
            return TransitionCallbackReturn.FAILURE
        self._last_tick = None
        self._timer = self.create_timer(self.period, self._on_tick)
        self.get_logger().info(f"active: torque on, {self.p['control_rate_hz']} Hz; commands wait for a reset "
                               "(homing)")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_timer()
        if self.arm is not None and self.arm.bus.connected:
            try:
                if self.p["on_stop"] == "torque_off":
                    self.arm.bus.set_torque(False, tries=TORQUE_TRIES)
            except MotorBusError as exc:
                self.get_logger().error(f"deactivate: {exc}")
            self.arm.homed = False
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        self.arm = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._stop()
        return TransitionCallbackReturn.SUCCESS

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None

    def _stop(self) -> None:
        """R4: every motor torque-off (or held), the port closed; failures named, never raised."""
        self._stop_timer()
        if self.arm is None or not self.arm.bus.connected:
            return
        problems = self.arm.safe_stop(self.p["on_stop"])
        what = "torque off" if self.p["on_stop"] == "torque_off" else "holding"
        if problems:
            self.get_logger().error(f"stop ({what}): " + "; ".join(problems))
        else:
            self.get_logger().info(f"stopped: {what} on every motor, port closed")

    # ----------------------------------------------------------------- inputs
    def _on_command(self, msg: Action) -> None:
        self._command, self._command_time = msg, time.monotonic()

    def _on_reward(self, msg: Reward) -> None:
        self._reward, self._reward_time = msg, time.monotonic()

    def _on_reset(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        """Home the arm, one tick per control period (frames keep flowing), then answer. The
        ticks run in this callback: a pending coroutine would starve the executor's timers."""
        if self._timer is None:
            response.success, response.message = False, "the arm driver is not active"
            return response
        self.arm.homed = False
        start = next_tick = time.monotonic()
        while True:
            if stop_requested():
                response.success, response.message = False, "the driver is stopping"
                return response
            if self._tick(self.arm.home_step):
                break
            if time.monotonic() - start > self.p["reset_timeout_s"]:
                self.get_logger().error(f"reset: home not reached within {self.p['reset_timeout_s']} s; joints "
                                        f"at {np.round(self.arm.last.position, 3).tolist()}")
                response.success, response.message = False, "reset did not reach the home pose in time"
                return response
            next_tick += self.period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        self._command = None  # a command sent before the reset is not executed after it
        self.episode_id += 1
        response.success = True
        response.message = f"episode {self.episode_id} at the home pose"
        response.episode_id = self.episode_id
        response.observation = Observation(state=self.arm.last.position.astype(np.float32).tolist(), images=[])
        return response

    # ------------------------------------------------------------------- tick
    def _on_tick(self) -> None:
        self._tick(self._command_tick)

    def _tick(self, act) -> object:
        """One control tick: read, ``act()``, publish the frame; returns what ``act`` returned.
        A bus failure stops every motor (R4) and ends the process, naming the motor."""
        start = time.monotonic()
        self.counters["ticks"] += 1
        if self._last_tick is not None and start - self._last_tick > 1.5 * self.period:
            self.counters["late"] += 1  # the executor started this tick half a period late
        self._last_tick = start
        try:
            reading = self.arm.read(deadline_s=0.5 * self.period)
            result = act()
        except MotorBusError as exc:
            self._fail(str(exc))
        self._recent_stale.append(reading.stale)
        if reading.stale:
            self.counters["stale"] += 1
            self.get_logger().warning(f"stale read: {reading.reasons}; no frame this tick", throttle_duration_sec=1.0)
            if sum(self._recent_stale) >= self.p["max_stale_in_10"]:
                self._fail(f"{sum(self._recent_stale)} of the last {len(self._recent_stale)} reads were stale "
                           f"(now: {', '.join(f'motor {i}: {why}' for i, why in reading.reasons.items())})")
        else:
            self._publish(reading)
        if time.monotonic() - start > self.period:
            self.counters["overruns"] += 1
        self._report(start)
        return result

    def _fail(self, why: str) -> None:
        """The bus cannot go on: every motor stopped (R4), then the process ends with code 3."""
        self.get_logger().error(f"servo bus failed: {why}")
        self._stop()
        raise SystemExit(3)

    def _command_tick(self) -> None:
        command, self._command = self._command, None  # a delta is executed once
        if command is None or time.monotonic() - self._command_time > self.p["command_timeout"]:
            self.counters["held"] += 1
            return
        lin, ang = command.linear, command.angular
        if self.arm.step([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z], command.gripper):
            self.counters["rejected"] += 1
            self.get_logger().warning(f"malformed command replaced by hold ({self.counters['rejected']} so far)",
                                      throttle_duration_sec=1.0)
        elif self.arm.homed:
            self.counters["commands"] += 1
        else:
            self.counters["held"] += 1
            self.get_logger().warning("commands are held until a reset has homed the arm", throttle_duration_sec=5.0)

    # ---------------------------------------------------------------- outputs
    def _publish(self, reading) -> None:
        stamp = self.get_clock().now().to_msg()
        self._joint_pub.publish(joint_state_message(reading.names, reading.position, reading.velocity,
                                                    reading.effort, stamp))
        self._ee_pub.publish(pose_message(reading.ee_position, reading.ee_quaternion, stamp, self.p["frame_id"]))
        reward = Reward()
        fresh = self._reward is not None and time.monotonic() - self._reward_time <= self.p["reward_timeout_s"]
        if fresh:
            reward.reward, reward.success = self._reward.reward, self._reward.success
            reward.success_probability, reward.source = self._reward.success_probability, self._reward.source
            reward.terminated, reward.truncated = self._reward.terminated, self._reward.truncated
        else:
            reward.source = Reward.SOURCE_HUMAN
        reward.header.stamp = stamp
        self._reward_pub.publish(reward)  # last: the frame is complete
        self.counters["frames"] += 1

    def _report(self, now: float) -> None:
        if now - self._reported < self.p["report_period_s"]:
            return
        self._reported = now
        c = self.counters
        missed = c["overruns"] + c["late"] + c["stale"]
        self.get_logger().info(
            f"{c['ticks']} ticks, {c['frames']} frames, missed deadlines {missed} "
            f"({100.0 * missed / max(c['ticks'], 1):.2f} %: {c['overruns']} overruns, {c['late']} late, "
            f"{c['stale']} stale reads), "
            f"{c['commands']} commands, {c['held']} holds, {c['rejected']} rejected")

    def destroy_node(self) -> None:
        self._stop()
        super().destroy_node()


def main(args=None) -> None:
    try:
        run_node(ArmDriverNode, args=args)
    except (ValueError, DriverStartError) as exc:  # bad parameters, or the bus refused: one clear line
        print(f"arm_driver: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
