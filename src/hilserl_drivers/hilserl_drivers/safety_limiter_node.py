"""Safety limiter node: hilserl/executed_action + ee_pose in, hilserl/command out.

Every executed action yields exactly one command with the same header (stamp), source and
intervention flag: the action clamped by ``SafetyLimiter``, or hold (zero deltas, gripper
stays) when it is rejected; rejections are counted by reason and logged, throttled.
Watchdog: the limiter only ever publishes in answer to an input, so when the input goes
silent for ``command_timeout`` nothing more goes out (the driver then holds); the silence
and the resumption are logged. The bounds and the per-step scale must match the driver's
and are read-only; the clamp fraction, ages and timeouts take effect when set.
"""

from __future__ import annotations


from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import Action, Topics
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from hilserl_drivers.ee_control import EndEffectorLimits
from hilserl_drivers.safety_limiter import LimiterConfig, SafetyLimiter
from hilserl_drivers.node_main import check_parameter_update, run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

# name: (default, description, read_only, (low, high) or None)
PARAMETERS = {
    "bounds_low": ([0.3, -0.3, 0.015], "end-effector bounds box, lower corner x, y, z in the base frame (m)", True,
                   None),
    "bounds_high": ([0.7, 0.3, 0.4], "end-effector bounds box, upper corner x, y, z in the base frame (m)", True,
                    None),
    "rpy_low": ([0.0, 0.0, -0.5], "lower bound of the roll/pitch/yaw offset (rad); an empty range forbids "
                                  "rotation about that axis", True, None),
    "rpy_high": ([0.0, 0.0, 0.5], "upper bound of the roll/pitch/yaw offset (rad)", True, None),
    "max_step_translation": (0.025, "translation of a normalised delta of 1 per step (m); must equal the "
                                    "driver's", True, (1e-4, 0.2)),
    "max_step_rotation": (0.1, "rotation of a normalised delta of 1 per step (rad); must equal the driver's",
                          True, (1e-4, 1.0)),
    "max_delta": (1.0, "per-step clamp on every normalised delta, as a fraction of the driver's per-step limit",
                  False, (0.01, 1.0)),
    "max_command_age": (1.0, "commands whose stamp is older (or further ahead) than this (s) are rejected as "
                             "stale; 0 disables", False, (0.0, 60.0)),
    "pose_timeout": (1.0, "hold while the latest ee_pose is older than this (s); 0 trusts the latest pose at "
                          "any age", False, (0.0, 60.0)),
    "workspace": (True, "true: an end-effector driver (bounds box, needs ee_pose); false: a system without "
                        "one, e.g. a hosted gymnasium task (per-step clamp and rejections only)", True, None),
    "command_timeout": (0.2, "watchdog: input silent this long (s) is logged as a silence (nothing is "
                             "published meanwhile: the driver holds)", False, (0.01, 10.0)),
    "watchdog_rate_hz": (20.0, "how often the watchdog checks for silence", True, (1.0, 1000.0)),
    "log_throttle_s": (1.0, "at most one rejection warning per this many seconds", False, (0.0, 3600.0)),
}


def _descriptor(name: str) -> ParameterDescriptor:
    _, description, read_only, span = PARAMETERS[name]
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if span is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=span[0], to_value=span[1])]
    return descriptor


def limiter_config(values: dict) -> LimiterConfig:
    """The validated LimiterConfig of a dict of parameter values (ValueError names the parameter)."""
    for name in ("bounds_low", "bounds_high", "rpy_low", "rpy_high"):
        if len(values[name]) != 3:
            raise ValueError(f"{name} must be 3 numbers (x, y, z), got {list(values[name])}")
    limits = EndEffectorLimits(
        position_low=tuple(float(v) for v in values["bounds_low"]),
        position_high=tuple(float(v) for v in values["bounds_high"]),
        max_step_translation=float(values["max_step_translation"]),
        rpy_low=tuple(float(v) for v in values["rpy_low"]),
        rpy_high=tuple(float(v) for v in values["rpy_high"]),
        max_step_rotation=float(values["max_step_rotation"]),
        max_tracking_error=float(values["max_step_translation"]),  # unused by the limiter
    )
    config = LimiterConfig(limits=limits, max_delta=float(values["max_delta"]),
                           max_command_age=float(values["max_command_age"]),
                           pose_timeout=float(values["pose_timeout"]), workspace=bool(values["workspace"]))
    try:
        config.validate()
    except ValueError as exc:
        message = str(exc).replace("position_low", "bounds_low").replace("position_high", "bounds_high")
        raise ValueError(message) from None
    return config


def _stamp_seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _check_values(values: dict) -> None:
    """Every parameter value usable (raises ValueError naming what is not)."""
    limiter_config(values)
    if values["log_throttle_s"] < 0 or values["command_timeout"] <= 0:
        raise ValueError("command_timeout must be > 0 and log_throttle_s >= 0")


class SafetyLimiterNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("safety_limiter", **kwargs)
        for name, (default, *_rest) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name))
        self._values = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.limiter = SafetyLimiter(limiter_config(self._values))
        self.published = 0
        self.silences = 0
        self._silent = False
        self._last_input_time = None
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._command_pub = self.create_publisher(Action, Topics.COMMAND, RELIABLE)
        self.create_subscription(PoseStamped, Topics.EE_POSE, self._on_ee_pose, RELIABLE)
        self.create_subscription(Action, Topics.EXECUTED_ACTION, self._on_executed_action, RELIABLE)
        self.create_timer(1.0 / self._values["watchdog_rate_hz"], self._on_watchdog)
        lim = self.limiter.config.limits
        if self.limiter.config.workspace:
            self.get_logger().info(f"safety limiter: box {lim.position_low}..{lim.position_high} m, "
                                   f"step {lim.max_step_translation} m x {self.limiter.config.max_delta}")
        else:
            self.get_logger().info(f"safety limiter without a workspace (no end effector): every delta "
                                   f"clamped to +/-{self.limiter.config.max_delta}, malformed commands held")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------- parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        return check_parameter_update(self._values, params, _check_values)

    def _apply_parameters(self, params) -> None:
        self._values.update({p.name: p.value for p in params if p.name in PARAMETERS})
        self.limiter.reconfigure(limiter_config(self._values))
        self.get_logger().info("applied " + ", ".join(f"{p.name}={p.value}" for p in params))

    # ------------------------------------------------------------------ inputs
    def _on_ee_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        if not self.limiter.update_pose([p.x, p.y, p.z], now=self._now()):
            self.get_logger().warning("ee_pose with non-finite position ignored", throttle_duration_sec=1.0)

    def _on_executed_action(self, msg: Action) -> None:
        now = self._now()
        if self._silent:
            self._silent = False
            self.get_logger().info(f"executed actions resumed after {now - self._last_input_time:.3f} s")
        self._last_input_time = now
        lin, ang = msg.linear, msg.angular
        deltas = [lin.x, lin.y, lin.z, ang.x, ang.y, ang.z]
        out = self.limiter.limit(deltas, msg.gripper, stamp=_stamp_seconds(msg.header.stamp), now=now)
        command = Action()
        command.header = msg.header
        command.linear.x, command.linear.y, command.linear.z = (float(v) for v in out.deltas[:3])
        command.angular.x, command.angular.y, command.angular.z = (float(v) for v in out.deltas[3:])
        command.gripper = int(out.gripper)
        command.source = msg.source
        command.intervention = msg.intervention
        self._command_pub.publish(command)
        self.published += 1
        if out.rejected is not None:
            throttle = {"throttle_duration_sec": self._values["log_throttle_s"]} if self._values[
                "log_throttle_s"] > 0 else {}
            counts = {k: v for k, v in self.limiter.rejections.items() if v}
            self.get_logger().warning(f"rejected a command ({out.rejected}), sent hold; rejections so far {counts}",
                                      **throttle)

    def _on_watchdog(self) -> None:
        if self._last_input_time is None or self._silent:
            return
        silent_for = self._now() - self._last_input_time
        if silent_for > self._values["command_timeout"]:
            self._silent = True
            self.silences += 1
            self.get_logger().warning(f"no executed action for {silent_for:.3f} s: publishing nothing, "
                                      f"the driver holds")

    @property
    def silent(self) -> bool:
        return self._silent

    def counters(self) -> dict:
        return {"published": self.published, "accepted": self.limiter.accepted, "clamped": self.limiter.clamped,
                "silences": self.silences,
                **{f"rejected/{k}": v for k, v in self.limiter.rejections.items()}}


def main(args=None) -> None:
    run_node(SafetyLimiterNode, args)


if __name__ == "__main__":
    main()
