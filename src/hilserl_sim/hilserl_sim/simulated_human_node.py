"""Simulated human node: the scripted expert as one more human-action source for the mux.

On every frame (the bridge's hilserl/reward, published last with the frame's stamp) it
feeds the frame's ee_pose, task_state (cube) and gripper opening (from joint_states) to
``SimulatedHuman``, once all four of that stamp are in (topics arrive in no fixed order
under load; acting on the previous frame's pose would make the expert's actions depend on
timing), and publishes one hilserl/human_action stamped with the frame stamp:
the expert's deltas and gripper command, source SCRIPTED, ``intervention`` = whether the
rule has the human in control this frame. Episode boundaries and outcomes come from the
actor's hilserl/episode_status: an ended episode (end_reason != END_RUNNING) is reported
to the rule, and the next frame starts the next episode. Rule parameters take effect
when set (episode-level rules from the next episode on).
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np
from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import Action, EpisodeStatus, Reward, Topics
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from hilserl_sim.expert import EXPERT_DEFAULTS
from hilserl_sim.scenes import ARMS
from hilserl_sim.simulated_human import RULE_KINDS, InterventionRule, SimulatedHuman
from hilserl_drivers.node_main import check_parameter_update, declare_parameters, run_node

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
KEPT_FRAMES = 32

RULE_FIELDS = ("start_probability", "decay_steps", "patience", "min_progress", "target_success_rate")

PARAMETERS = {
    "scene": ("panda", ParameterDescriptor(
        description="arm of the bridged scene ('panda', 'so101'): expert tuning and gripper opening",
        read_only=True, additional_constraints="one of " + ", ".join(ARMS))),
    "seed": (0, ParameterDescriptor(description="seed of the rule's draws and the expert's noise", read_only=True)),
    "expert_miss_distance": (0.0, ParameterDescriptor(
        description="failure demonstrations (0: off): the expert grasps this far (m) beside the cube and "
                    "lifts its empty gripper (negatives for the reward classifier)", read_only=True,
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=0.5)])),
    "rule": ("episode_probability", ParameterDescriptor(
        description="when the human takes over: " + ", ".join(RULE_KINDS),
        additional_constraints="one of " + ", ".join(RULE_KINDS))),
    "start_probability": (0.5, ParameterDescriptor(
        description="take-over probability of an episode at env step 0 / success rate 0",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)])),
    "decay_steps": (5000, ParameterDescriptor(
        description="frames over which the probability decays linearly to 0 (no_progress: active this long; "
                    "0 = always)", integer_range=[IntegerRange(from_value=0, to_value=10_000_000)])),
    "patience": (10, ParameterDescriptor(
        description="no_progress: frames without getting closer to the cube before taking over",
        integer_range=[IntegerRange(from_value=0, to_value=100_000)])),
    "min_progress": (0.005, ParameterDescriptor(
        description="no_progress: metres closer to the cube that count as progress",
        floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)])),
    "target_success_rate": (0.9, ParameterDescriptor(
        description="success_rate: take-over probability reaches 0 at this success rate",
        floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1.0)])),
    "window": (20, ParameterDescriptor(
        description="success_rate: policy-only episodes in the measured success rate", read_only=True,
        integer_range=[IntegerRange(from_value=1, to_value=10_000)])),
}


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _rule(values: dict) -> InterventionRule:
    try:
        return InterventionRule(kind=values["rule"], window=int(values["window"]),
                                **{name: values[name] for name in RULE_FIELDS})
    except ValueError as exc:  # name the parameter, not the dataclass field
        raise ValueError(str(exc).replace("InterventionRule.kind", "rule").replace("InterventionRule.", "")) from None


class SimulatedHumanNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("simulated_human", **kwargs)
        self._values = declare_parameters(self, PARAMETERS)
        scene = self._values["scene"]
        if scene not in ARMS:
            raise ValueError(f"scene must be one of {sorted(ARMS)}, got {scene!r}")
        self._arm = ARMS[scene]
        expert = dataclasses.replace(EXPERT_DEFAULTS[scene], miss_distance=float(self._values["expert_miss_distance"]))
        self.human = SimulatedHuman(_rule(self._values), expert, seed=int(self._values["seed"]))
        self._lock = threading.Lock()
        self._ee: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._cube: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._gripper: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._rewards: collections.OrderedDict[int, Reward] = collections.OrderedDict()  # waiting for parts
        self._episode = 0
        self._episode_step = 0
        self._episode_started = False
        self._evaluating = False
        self.published = 0
        self.unmatched_frames = 0
        """Frames whose pose, cube or joints never arrived (no human action for them: the mux
        waits ``human_wait_s`` and goes on with the latest one)."""
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        self._human_pub = self.create_publisher(Action, Topics.HUMAN_ACTION, RELIABLE)
        self.create_subscription(PoseStamped, Topics.EE_POSE, self._on_ee_pose, RELIABLE)
        self.create_subscription(PoseStamped, Topics.TASK_STATE, self._on_task_state, RELIABLE)
        self.create_subscription(JointState, Topics.JOINT_STATES, self._on_joint_states, RELIABLE)
        self.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self._on_episode_status, RELIABLE)
        self.create_subscription(Reward, Topics.REWARD, self._on_reward, RELIABLE)
        self.get_logger().info(f"simulated human: {scene} expert, rule {self._values['rule']}")

    # ------------------------------------------------------------- parameters
    def _validate_parameters(self, params) -> SetParametersResult:
        return check_parameter_update(self._values, params, _rule)

    def _apply_parameters(self, params) -> None:
        with self._lock:
            self._values.update({p.name: p.value for p in params if p.name in PARAMETERS})
            self.human.rule = _rule(self._values)
        self.get_logger().info("applied " + ", ".join(f"{p.name}={p.value}" for p in params)
                               + " (episode-level rules from the next episode)")

    # ------------------------------------------------------------------ inputs
    def _keep(self, store: collections.OrderedDict, stamp: int, value) -> None:
        """Store one part of the frame ``stamp`` (under the lock); act if the frame is complete."""
        store[stamp] = value
        while len(store) > KEPT_FRAMES:
            evicted, _ = store.popitem(last=False)
            if store is self._rewards:
                self.unmatched_frames += 1
                self.get_logger().warning(f"frame {evicted}: no ee_pose, task_state or joint_states with its "
                                          "stamp: no human action for it", throttle_duration_sec=2.0)
        if stamp in self._rewards and all(stamp in s for s in (self._ee, self._cube, self._gripper)):
            self._act(self._rewards.pop(stamp), [s[stamp] for s in (self._ee, self._cube, self._gripper)])

    def _on_ee_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            self._keep(self._ee, _stamp_ns(msg.header), np.array([p.x, p.y, p.z]))

    def _on_task_state(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        with self._lock:
            self._keep(self._cube, _stamp_ns(msg.header), np.array([p.x, p.y, p.z]))

    def _on_joint_states(self, msg: JointState) -> None:
        if self._arm.gripper_joint not in msg.name:
            return
        q = msg.position[list(msg.name).index(self._arm.gripper_joint)]
        arm = self._arm
        opening = float(np.clip((q - arm.gripper_joint_closed) / (arm.gripper_joint_open - arm.gripper_joint_closed),
                                0.0, 1.0))
        with self._lock:
            self._keep(self._gripper, _stamp_ns(msg.header), opening)

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        with self._lock:
            self._evaluating = bool(msg.evaluation)  # evaluation episodes measure the policy alone
            if msg.evaluation:
                return
            if msg.end_reason != EpisodeStatus.END_RUNNING:
                if self._episode_started and msg.episode_id == self._episode:
                    self.human.end_episode(bool(msg.success))
                    self._episode_started = False
                    self._episode = int(msg.episode_id) + 1
            elif msg.episode_id != self._episode:
                self._episode = int(msg.episode_id)  # the actor's numbering (or a missed end): follow it

    def _on_reward(self, msg: Reward) -> None:
        with self._lock:
            self._keep(self._rewards, _stamp_ns(msg.header), msg)

    def _act(self, msg: Reward, inputs: list) -> None:
        """The human's action on one complete frame (under the lock)."""
        if self._evaluating:
            self._publish_action(msg, False, np.zeros(3), Action.GRIPPER_STAY)
            return
        if not self._episode_started:
            self.human.reset(self._episode)
            self._episode_started = True
            self._episode_step = 0
        intervening, deltas, gripper = self.human.decide(self._episode_step, *inputs)
        self._episode_step += 1
        self._publish_action(msg, intervening, deltas, gripper)

    def _publish_action(self, msg: Reward, intervening: bool, deltas, gripper: int) -> None:
        """One human action for the frame of ``msg`` (stamped like it)."""
        out = Action()
        out.header.stamp = msg.header.stamp
        out.header.frame_id = "simulated"
        out.linear.x, out.linear.y, out.linear.z = (float(v) for v in deltas[:3])
        out.gripper = int(gripper)
        out.source = Action.SOURCE_SCRIPTED
        out.intervention = bool(intervening)
        self._human_pub.publish(out)
        self.published += 1


def main(args=None) -> None:
    run_node(SimulatedHumanNode, args)


if __name__ == "__main__":
    main()
