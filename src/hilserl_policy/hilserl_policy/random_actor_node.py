"""Publishes random transitions: a stand-in actor for plumbing checks.

It numbers transitions per actor, keeps every unacknowledged one and resends
those older than a timeout, exactly as the real actor will, so the ack path is
exercised end to end. It learns nothing.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from hilserl_drivers.node_main import run_node
from hilserl_msgs.msg import Action, Observation, Topics, Transition, TransitionAck

RELIABLE = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)


class RandomActorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("random_actor", **kwargs)
        d = self.declare_parameter
        fixed = "Read-only: fixed for the life of the node."
        d("actor_id", "actor_0", ParameterDescriptor(description="Identifier sent with every transition. " + fixed,
                                                     read_only=True))
        d("rate_hz", 20.0, ParameterDescriptor(description="Transitions per second (applied when set).",
                                               floating_point_range=[FloatingPointRange(from_value=0.1, to_value=1000.0)]))
        d("state_dim", 8, ParameterDescriptor(description="Length of the random state vector. " + fixed,
                                              integer_range=[IntegerRange(from_value=1, to_value=4096)],
                                              read_only=True))
        d("action_dim", 4, ParameterDescriptor(description="Length of the random action vector. " + fixed,
                                               integer_range=[IntegerRange(from_value=1, to_value=64)],
                                               read_only=True))
        d("episode_length", 50, ParameterDescriptor(
            description="Steps per episode, the last one truncated (applied from the next step).",
            integer_range=[IntegerRange(from_value=1, to_value=100000)]))
        d("resend_after_s", 1.0, ParameterDescriptor(
            description="Resend a transition not acknowledged after this (applied when set).",
            floating_point_range=[FloatingPointRange(from_value=0.05, to_value=60.0)]))
        d("seed", 0, ParameterDescriptor(description="Seed of the random generator. " + fixed, read_only=True))
        p = {name: self.get_parameter(name).value for name in
             ("actor_id", "rate_hz", "state_dim", "action_dim", "episode_length", "resend_after_s", "seed")}
        self._actor_id, self._resend_after = p["actor_id"], p["resend_after_s"]
        self._state_dim, self._action_dim, self._episode_length = p["state_dim"], p["action_dim"], p["episode_length"]
        self._rng = np.random.default_rng(p["seed"])
        self._sequence = 0
        self._episode, self._step = 0, 0
        self._state = self._rng.standard_normal(self._state_dim).astype(np.float32)
        self._unacked: OrderedDict[int, tuple[float, Transition]] = OrderedDict()
        self._acked = -1
        self._pub = self.create_publisher(Transition, Topics.TRANSITIONS, RELIABLE)
        self.create_subscription(TransitionAck, Topics.TRANSITION_ACKS, self._on_transition_acks, RELIABLE)
        self._tick_timer = self.create_timer(1.0 / p["rate_hz"], self._on_tick)
        self.create_timer(2.0, self._report)
        self.add_post_set_parameters_callback(self._on_parameters_set)

    def _on_parameters_set(self, parameters) -> None:
        """Apply what rqt / `ros2 param set` changed (ranges and read-only were checked before)."""
        for param in parameters:
            if param.name == "rate_hz":
                self.destroy_timer(self._tick_timer)
                self._tick_timer = self.create_timer(1.0 / param.value, self._on_tick)
            elif param.name == "episode_length":
                self._episode_length = param.value
            elif param.name == "resend_after_s":
                self._resend_after = param.value
            self.get_logger().info(f"{param.name} set to {param.value}")

    def _on_tick(self) -> None:
        next_state = self._rng.standard_normal(self._state_dim).astype(np.float32)
        truncated = self._step >= self._episode_length - 1
        msg = Transition(actor_id=self._actor_id, sequence=self._sequence, episode_id=self._episode,
                         step=self._step, observation=Observation(state=self._state.tolist()),
                         next_observation=Observation(state=next_state.tolist()),
                         action=self._rng.uniform(-1, 1, self._action_dim).astype(np.float32).tolist(),
                         gripper_action=Action.GRIPPER_STAY, action_source=Action.SOURCE_SCRIPTED,
                         reward=0.0, terminated=False, truncated=truncated)
        self._pub.publish(msg)
        self._unacked[self._sequence] = (time.monotonic(), msg)
        self._sequence += 1
        self._state, self._step = next_state, self._step + 1
        if truncated:
            self._episode, self._step = self._episode + 1, 0
            self._state = self._rng.standard_normal(self._state_dim).astype(np.float32)
        self._resend_stale()

    def _resend_stale(self) -> None:
        now = time.monotonic()
        for seq, (sent, msg) in list(self._unacked.items()):
            if now - sent < self._resend_after:
                break
            self._pub.publish(msg)
            self._unacked[seq] = (now, msg)
            self._unacked.move_to_end(seq)

    def _on_transition_acks(self, msg: TransitionAck) -> None:
        if msg.actor_id != self._actor_id or msg.highest_contiguous <= self._acked:
            return
        self._acked = msg.highest_contiguous
        for seq in [s for s in self._unacked if s <= self._acked]:
            del self._unacked[seq]

    def _report(self) -> None:
        self.get_logger().info(f"sent {self._sequence} transitions, acknowledged up to {self._acked}, "
                               f"{len(self._unacked)} kept for resend")


def main(args=None) -> None:
    # run_node: SIGINT/SIGTERM stop it even while idle (rclpy.spin once missed a SIGINT in CI)
    run_node(RandomActorNode, args)


if __name__ == "__main__":
    main()
