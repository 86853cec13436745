"""Human input node: one input device -> ``hilserl/human_action`` for the intervention mux.

``device`` (read-only) names the device module, ``hilserl_teleop.devices.<device>``, imported
when the node starts; its ``PARAMETERS`` are declared as ``<device>.<name>``, read-only except
``<device>.deadband``, which applies at run time by rebuilding the reader (close, new reader,
open). ``scale`` multiplies every delta (result clipped to [-1, 1]) and applies on the next
action; ``rate_hz`` and ``reconnect_period_s`` apply at once too.

Thread model: a reader thread owns the ``DeviceReader`` (readers are single-caller): it opens
it, blocks in ``read`` (at most ``READ_SLICE_S``, or until the next periodic publish), passes
it the follower's latest ``joint_states`` / ``ee_pose`` (``follow``, for a leader arm), and
publishes. The executor thread only takes subscriptions, parameter sets and service answers.

Published: an Action (source HUMAN, ``header.frame_id`` = device, ``intervention`` = the
person is driving now, i.e. ``command.active``) for every command the device reads, and again
at ``rate_hz`` while the command is active. A ``toggle_intervention`` press calls
``hilserl/set_intervention`` with the opposite of what this node last set (starting from off;
a toggle made elsewhere, e.g. in rqt, is not seen: the next press may then repeat it).

Device loss (``DeviceError``): the error is logged naming the device and publishing stops.
If the person was driving (a key held, or the take-over toggled on), one last hold is
published (zero deltas, still marked intervention, so the mux keeps the arm still instead of
handing back to the policy) and ``hilserl/set_pause`` true is called: the arm holds until
someone unpauses. The reader is re-opened every ``reconnect_period_s`` (hot-plug); recovery
is logged; the pause stays until a person lifts it. A node stopped while the person drives
publishes a let-go (zero deltas, not intervention) before it exits.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import Action, Topics
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from hilserl_drivers.node_main import check_parameter_update, declare_parameters, run_node
from hilserl_teleop.devices.base import DeviceError, DeviceReader, HumanCommand

DEVICES = ("spacemouse", "keyboard", "gamepad", "leader_arm")
RUNTIME_DEVICE_PARAMETERS = ("deadband",)
"""Device parameters settable at run time (applied by rebuilding the reader); others read-only."""
READ_SLICE_S = 0.1
"""Longest block in ``read``: how soon the thread sees a stop, a rebuild or new follower state."""
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high)]


PARAMETERS = {
    "rate_hz": (30.0, ParameterDescriptor(
        description="publishing rate (Hz) while the person is driving", floating_point_range=_range(1.0, 500.0))),
    "reconnect_period_s": (1.0, ParameterDescriptor(
        description="seconds between attempts to open a missing device (hot-plug)",
        floating_point_range=_range(0.05, 60.0))),
    "scale": (1.0, ParameterDescriptor(
        description="multiplier on every delta of the device (result clipped to [-1, 1])",
        floating_point_range=_range(0.0, 2.0))),
}


@dataclasses.dataclass(frozen=True)
class HumanInputConfig:
    rate_hz: float = 30.0
    """Publishing rate (Hz) while the person is driving."""
    reconnect_period_s: float = 1.0
    """Seconds between attempts to open a missing device."""
    scale: float = 1.0
    """Multiplier on every delta."""

    def validate(self) -> None:
        for name in ("rate_hz", "reconnect_period_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.scale) and self.scale >= 0.0):
            raise ValueError(f"scale must be a finite number >= 0, got {self.scale!r}")


def device_module(device: str):
    """``hilserl_teleop.devices.<device>``; ValueError for a name not in DEVICES."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}")
    return importlib.import_module(f"hilserl_teleop.devices.{device}")


class HumanInputNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("human_input", **kwargs)
        self.device = self.declare_parameter("device", "keyboard", ParameterDescriptor(
            description="input device: " + ", ".join(DEVICES), read_only=True,
            additional_constraints="one of " + ", ".join(DEVICES))).value
        self._module = device_module(self.device)
        table = dict(PARAMETERS)
        for name, (default, description) in self._module.PARAMETERS.items():
            table[f"{self.device}.{name}"] = (default, ParameterDescriptor(
                description=description, read_only=name not in RUNTIME_DEVICE_PARAMETERS))
        self._values = declare_parameters(self, table)
        self.config = self._build(self._values)[0]  # fails loudly on a bad parameter file

        self._lock = threading.Lock()
        self._follower: tuple[list[str], list[float], list[float] | None] | None = None
        self._follower_new = False
        self._intervention = False
        """What this node last asked of hilserl/set_intervention (toggle presses flip it)."""
        self._rebuild = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.published = 0
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._action_pub = self.create_publisher(Action, Topics.HUMAN_ACTION, RELIABLE)
        self._set_intervention = self.create_client(SetBool, Topics.SET_INTERVENTION)
        self._set_pause = self.create_client(SetBool, Topics.SET_PAUSE)
        self.create_subscription(JointState, Topics.JOINT_STATES, self._on_joint_states, RELIABLE)
        self.create_subscription(PoseStamped, Topics.EE_POSE, self._on_ee_pose, RELIABLE)
        self.get_logger().info(f"human input: {self.device}, scale {self.config.scale}")
        self._thread = threading.Thread(target=self._run, name=f"human_input/{self.device}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- parameters
    def _device_values(self, values: dict) -> dict:
        prefix = f"{self.device}."
        return {name[len(prefix):]: value for name, value in values.items() if name.startswith(prefix)}

    def _build(self, values: dict) -> tuple[HumanInputConfig, DeviceReader]:
        config = HumanInputConfig(float(values["rate_hz"]), float(values["reconnect_period_s"]),
                                  float(values["scale"]))
        config.validate()
        return config, self._module.make_reader(self._device_values(values))

    def _validate_parameters(self, params):
        return check_parameter_update(self._values, params, self._build)

    def _apply_parameters(self, params) -> None:
        changed = {p.name: p.value for p in params if p.name in self._values}
        with self._lock:
            self._values.update(changed)
            self.config = self._build(self._values)[0]
            if any(name.startswith(f"{self.device}.") for name in changed):
                self._rebuild = True
        self._wake.set()
        if changed:
            self.get_logger().info("applied " + ", ".join(f"{k}={v}" for k, v in changed.items()))

    # ---------------------------------------------------------------- follower
    def _on_joint_states(self, msg: JointState) -> None:
        with self._lock:
            ee = self._follower[2] if self._follower else None
            self._follower = (list(msg.name), list(msg.position), ee)
            self._follower_new = True

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            names, positions = (self._follower[0], self._follower[1]) if self._follower else ([], [])
            self._follower = (names, positions, [p.x, p.y, p.z])
            self._follower_new = bool(names)

    # ------------------------------------------------------------ reader thread
    def _run(self) -> None:
        reader: DeviceReader | None = None
        last: HumanCommand | None = None
        last_publish = 0.0
        failures = 0
        try:
            while not self._stop.is_set():
                if reader is None:
                    reader, failures = self._open(failures)
                    last = None
                    continue
                with self._lock:
                    rebuild, self._rebuild = self._rebuild, False
                    follower = self._follower if self._follower_new else None
                    self._follower_new = False
                if rebuild:
                    reader.close()
                    reader = None
                    continue
                if follower is not None:
                    reader.follow(*follower)
                timeout = READ_SLICE_S
                if last is not None and last.active:
                    timeout = min(timeout, max(0.0, last_publish + 1.0 / self.config.rate_hz - time.monotonic()))
                try:
                    command = reader.read(timeout)
                except DeviceError as exc:
                    reader.close()
                    reader = None
                    self._lost(exc, last)
                    continue
                if command is not None:
                    last = command
                    if command.toggle_intervention:
                        self._toggle_intervention()
                if command is not None or (last is not None and last.active
                                           and time.monotonic() - last_publish >= 1.0 / self.config.rate_hz):
                    self._publish(last)
                    last_publish = time.monotonic()
        finally:
            if reader is not None:
                reader.close()
            if last is not None and last.active:  # stopped while driving: let go, do not leave it held
                self._publish(HumanCommand(np.zeros(6), stamp=time.monotonic()))

    def _open(self, failures: int) -> tuple[DeviceReader | None, int]:
        with self._lock:
            reader = self._build(self._values)[1]
            self._rebuild = False
        try:
            reader.open()
        except DeviceError as exc:
            if failures == 0:
                self.get_logger().warning(
                    f"{self.device} not available: {exc}; retrying every {self.config.reconnect_period_s} s")
            self._wake.wait(self.config.reconnect_period_s)
            self._wake.clear()
            return None, failures + 1
        self.get_logger().info(f"{self.device} open" + (f" (after {failures} failed tries)" if failures else ""))
        return reader, 0

    def _lost(self, error: DeviceError, last: HumanCommand | None) -> None:
        driving = (last is not None and last.active) or self._intervention
        self.get_logger().error(f"{self.device} lost: {error}; stopped publishing human actions")
        if not driving:
            return
        hold = HumanCommand(np.zeros(6), active=True, stamp=time.monotonic())
        self._publish(hold)
        self._call(self._set_pause, True, "the person was driving: pausing the policy; the arm holds until "
                                          f"someone calls {Topics.SET_PAUSE} false")

    def _toggle_intervention(self) -> None:
        with self._lock:
            self._intervention = not self._intervention
            wanted = self._intervention
        if not self._call(self._set_intervention, wanted, f"take-over {'on' if wanted else 'off'}"):
            with self._lock:
                self._intervention = not wanted

    def _call(self, client, value: bool, what: str) -> bool:
        if not client.service_is_ready():
            self.get_logger().error(f"{what}: no {client.srv_name} service (is the intervention mux running?)")
            return False
        self.get_logger().warning(f"{what}: calling {client.srv_name} {value}")
        future = client.call_async(SetBool.Request(data=value))
        future.add_done_callback(lambda f: self._answered(client.srv_name, value, f))
        return True

    def _answered(self, service: str, value: bool, future) -> None:
        answer = future.result()
        if answer is None or not answer.success:
            self.get_logger().error(f"{service} {value} refused: {answer.message if answer else 'no answer'}")

    def _publish(self, command: HumanCommand) -> None:
        deltas = np.clip(command.deltas * self.config.scale, -1.0, 1.0)
        msg = Action()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.device
        msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in deltas[:3])
        msg.angular.x, msg.angular.y, msg.angular.z = (float(v) for v in deltas[3:])
        msg.gripper = int(command.gripper)
        msg.source = Action.SOURCE_HUMAN
        msg.intervention = bool(command.active)
        self._action_pub.publish(msg)
        self.published += 1

    def destroy_node(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        super().destroy_node()


def main(args=None) -> None:
    run_node(HumanInputNode, args)


if __name__ == "__main__":
    main()
