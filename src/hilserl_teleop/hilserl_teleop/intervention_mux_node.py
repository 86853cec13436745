"""Intervention mux node: policy and human actions in, one executed action per policy action out.

Subscribes hilserl/policy_action and hilserl/human_action, publishes hilserl/executed_action
(header copied from the policy action; source and intervention flag from the decision of
``InterventionMux``). With ``sync_human`` (lock-step sim) each policy action waits up to
``human_wait_s`` for the human action with the same stamp before it is decided; outputs
keep the order of the policy actions. Every parameter takes effect when set (rqt toggles);
``hilserl/set_intervention`` and ``hilserl/set_pause`` (std_srvs/SetBool) set the same
parameters and answer with what they did.
"""

from __future__ import annotations

import collections
import threading

import numpy as np
from hilserl_msgs.msg import Action, Topics
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_srvs.srv import SetBool

from hilserl_teleop.intervention_mux import INPUT_SOURCES, Command, HumanInput, InterventionMux, MuxConfig
from hilserl_drivers.node_main import check_parameter_update, declare_parameters, run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
KEPT_HUMAN_ACTIONS = 64
"""Human actions remembered by stamp for sync_human matching."""


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high)]


PARAMETERS = {
    "intervention": (False, ParameterDescriptor(
        description="a person has taken over: execute the human action (hold while no fresh one arrives)")),
    "pause_policy": (False, ParameterDescriptor(
        description="the policy's actions are not executed: hold unless a human is in control")),
    "input_source": ("any", ParameterDescriptor(
        description="human inputs that count: " + ", ".join(INPUT_SOURCES) + " ('any': every human action; "
                    "'simulated': source SCRIPTED only; a device: source HUMAN with header.frame_id = the device)",
        additional_constraints="one of " + ", ".join(INPUT_SOURCES))),
    "human_timeout_s": (0.5, ParameterDescriptor(
        description="a human action older than this (s) is ignored", floating_point_range=_float_range(0.01, 10.0))),
    "sync_human": (False, ParameterDescriptor(
        description="wait for the human action stamped like the policy action (lock-step sim) before deciding")),
    "human_wait_s": (0.05, ParameterDescriptor(
        description="sync_human: longest wait (s) for the matching human action",
        floating_point_range=_float_range(0.001, 5.0))),
    "handback_hold_steps": (2, ParameterDescriptor(
        description="steps the arm holds after a human lets go, before the policy resumes",
        integer_range=[IntegerRange(from_value=0, to_value=1000)])),
}


def _deltas(msg: Action) -> np.ndarray:
    lin, ang = msg.linear, msg.angular
    return np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z], dtype=float)


def _stamp_ns(msg: Action) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _mux_config(values: dict) -> MuxConfig:
    config = MuxConfig(input_source=values["input_source"], human_timeout_s=float(values["human_timeout_s"]),
                       handback_hold_steps=int(values["handback_hold_steps"]))
    config.validate()
    return config


class InterventionMuxNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("intervention_mux", **kwargs)
        self._values = declare_parameters(self, PARAMETERS)
        self.mux = InterventionMux(_mux_config(self._values), intervention=self._values["intervention"],
                                   paused=self._values["pause_policy"])
        self._lock = threading.RLock()
        self._humans: collections.OrderedDict[int, tuple[HumanInput, float]] = collections.OrderedDict()
        self._latest_human: tuple[HumanInput, float] | None = None
        self._pending: collections.deque[tuple[Action, float]] = collections.deque()
        self.published = 0
        self.waited_out = 0
        """sync_human: policy actions decided at the deadline, without their human action."""
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        # depth 100: a slow reader (a demo recorder under load) still gets every executed action
        self._executed_pub = self.create_publisher(
            Action, Topics.EXECUTED_ACTION, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.create_subscription(Action, Topics.POLICY_ACTION, self._on_policy_action, RELIABLE)
        self.create_subscription(Action, Topics.HUMAN_ACTION, self._on_human_action, RELIABLE)
        self.create_service(SetBool, Topics.SET_INTERVENTION, self._on_set_intervention)
        self.create_service(SetBool, Topics.SET_PAUSE, self._on_set_pause)
        self._deadline_timer = None
        self._make_deadline_timer()
        self.get_logger().info(f"intervention mux: input_source {self._values['input_source']}, "
                               f"sync_human {self._values['sync_human']}")

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------- parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        return check_parameter_update(self._values, params, _mux_config)

    def _apply_parameters(self, params) -> None:
        with self._lock:
            old_wait = self._values["human_wait_s"]
            self._values.update({p.name: p.value for p in params if p.name in PARAMETERS})
            self.mux.reconfigure(_mux_config(self._values))
            self.mux.set_intervention(self._values["intervention"])
            self.mux.set_pause(self._values["pause_policy"])
            if self._values["human_wait_s"] != old_wait:
                self._make_deadline_timer()
            if not self._values["sync_human"]:
                self._flush(force=True)
        self.get_logger().info("applied " + ", ".join(f"{p.name}={p.value}" for p in params))

    def _make_deadline_timer(self) -> None:
        if self._deadline_timer is not None:
            self.destroy_timer(self._deadline_timer)
        self._deadline_timer = self.create_timer(max(0.002, self._values["human_wait_s"] / 4), self._on_deadline)

    def _set_bool(self, name: str, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        [result] = self.set_parameters([Parameter(name, value=bool(request.data))])
        response.success = result.successful
        response.message = f"{name} {'on' if request.data else 'off'}" if result.successful else result.reason
        return response

    def _on_set_intervention(self, request, response):
        return self._set_bool("intervention", request, response)

    def _on_set_pause(self, request, response):
        return self._set_bool("pause_policy", request, response)

    # ------------------------------------------------------------------ inputs
    def _on_human_action(self, msg: Action) -> None:
        human = HumanInput(_deltas(msg), int(msg.gripper), int(msg.source), bool(msg.intervention),
                           msg.header.frame_id)
        with self._lock:
            entry = (human, self._now())
            self._latest_human = entry
            self._humans[_stamp_ns(msg)] = entry
            while len(self._humans) > KEPT_HUMAN_ACTIONS:
                self._humans.popitem(last=False)
            self._flush()

    def _on_policy_action(self, msg: Action) -> None:
        with self._lock:
            self._pending.append((msg, self._now() + self._values["human_wait_s"]))
            # Nobody publishes human actions (no device, no simulated human): nothing to wait for.
            waiting = self._values["sync_human"] and self.count_publishers(Topics.HUMAN_ACTION) > 0
            self._flush(force=not waiting)

    def _on_deadline(self) -> None:
        with self._lock:
            if self._pending:
                self._flush()

    def _flush(self, force: bool = False) -> None:
        """Decide pending policy actions in order: matched, past their deadline, or forced."""
        now = self._now()
        while self._pending:
            msg, deadline = self._pending[0]
            matched = self._humans.get(_stamp_ns(msg))
            if matched is not None:
                human, age = matched[0], 0.0
            elif force or now >= deadline:
                if not force:
                    self.waited_out += 1
                human, age = (None, None) if self._latest_human is None else (
                    self._latest_human[0], now - self._latest_human[1])
            else:
                return
            self._pending.popleft()
            self._decide(msg, human, age)

    def _decide(self, msg: Action, human: HumanInput | None, age: float | None) -> None:
        open_before = len(self.mux.segments)
        decision = self.mux.decide(Command(_deltas(msg), int(msg.gripper)), _stamp_ns(msg), human, age)
        out = Action()
        out.header = msg.header
        out.linear.x, out.linear.y, out.linear.z = (float(v) for v in decision.deltas[:3])
        out.angular.x, out.angular.y, out.angular.z = (float(v) for v in decision.deltas[3:6])
        out.gripper = int(decision.gripper)
        out.source = int(decision.source)
        out.intervention = bool(decision.intervention)
        self._executed_pub.publish(out)
        self.published += 1
        if len(self.mux.segments) > open_before:
            s = self.mux.segments[-1]
            self.get_logger().info(f"intervention over: steps {s.first_step}..{s.last_step} ({s.steps} steps)")


def main(args=None) -> None:
    run_node(InterventionMuxNode, args)


if __name__ == "__main__":
    main()
