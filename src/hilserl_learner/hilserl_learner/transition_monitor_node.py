"""Receives transitions, acknowledges them and reports what arrived.

The plumbing check of the train composition until the learner node exists:
it proves that custom messages flow over DDS and that acknowledgements
(highest contiguous sequence per actor) reach the actors.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rcl_interfaces.msg import ParameterDescriptor, FloatingPointRange

from hilserl_msgs.msg import Topics, Transition, TransitionAck

from hilserl_drivers.node_main import run_node
from hilserl_learner.sequence_tracker import SequenceTracker

RELIABLE = QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE,
                      durability=QoSDurabilityPolicy.VOLATILE)


class TransitionMonitorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("transition_monitor", **kwargs)
        self.declare_parameter("report_period_s", 2.0, ParameterDescriptor(
            description="Seconds between two reports of what was received (applied when set).",
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=3600.0)]))
        self._period = self.get_parameter("report_period_s").value
        self._tracker = SequenceTracker()
        self._since_report = 0
        self._last_report = time.monotonic()
        self._acks = self.create_publisher(TransitionAck, Topics.TRANSITION_ACKS, RELIABLE)
        self.create_subscription(Transition, Topics.TRANSITIONS, self._on_transitions, RELIABLE)
        self._report_timer = self.create_timer(self._period, self._report)
        self.add_post_set_parameters_callback(self._on_parameters_set)

    def _on_parameters_set(self, parameters) -> None:
        for param in parameters:
            if param.name == "report_period_s":
                self._period = param.value
                self.destroy_timer(self._report_timer)
                self._report_timer = self.create_timer(self._period, self._report)
                self.get_logger().info(f"report_period_s set to {param.value}")

    def _on_transitions(self, msg: Transition) -> None:
        if self._tracker.accept(msg.actor_id, msg.sequence):
            self._since_report += 1
        ack = TransitionAck(actor_id=msg.actor_id,
                            highest_contiguous=self._tracker.highest_contiguous(msg.actor_id))
        ack.stamp = self.get_clock().now().to_msg()
        self._acks.publish(ack)

    def _report(self) -> None:
        now = time.monotonic()
        rate = self._since_report / max(now - self._last_report, 1e-9)
        self._since_report, self._last_report = 0, now
        actors = self._tracker.actors()
        if not actors:
            self.get_logger().info("waiting for transitions")
            return
        for actor_id, s in sorted(actors.items()):
            self.get_logger().info(
                f"actor {actor_id}: stored {s.received} distinct transitions ({rate:.1f}/s), "
                f"contiguous up to {s.highest_contiguous}, missing {s.missing}, "
                f"duplicates dropped {s.duplicates}")


def main(args=None) -> None:
    # run_node: SIGINT/SIGTERM stop it even while idle (rclpy.spin once missed a SIGINT in CI)
    run_node(TransitionMonitorNode, args)


if __name__ == "__main__":
    main()
