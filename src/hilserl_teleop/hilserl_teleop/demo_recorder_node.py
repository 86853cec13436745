"""Demo recorder node: the configured topics into a rosbag2 (MCAP) bag, as serialized bytes.

Subscribes each topic in ``topics`` with ``raw=True`` (the CDR bytes are written as they
arrive: nothing is deserialised on the hot path) once a publisher of it appears, with the
QoS its publishers offer (reliable only if all of them are, as ``ros2 bag record`` does).
A topic's type comes from ``topic_types`` ("topic=package/msg/Type", checked when the node
starts) or else from the graph. Episode boundaries and labels travel in the bag
as ``hilserl/episode_status`` (recorded by default; ``EpisodeStatus.end_reason``).

Crash behaviour (R8 of RELIABILITY.md): SIGINT/SIGTERM close the bag (summary and
``metadata.yaml``); a SIGKILL loses at most ``flush_period_s`` and leaves a bag that
``python -m hilserl_teleop.demo_bag recover BAG`` rewrites.
"""

from __future__ import annotations

import importlib
from datetime import datetime
from pathlib import Path

from hilserl_msgs.msg import Topics
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from hilserl_drivers.node_main import declare_parameters, run_node
from hilserl_teleop.demo_bag import DEFAULT_FLUSH_PERIOD_S, BagError, BagRecorder, message_typestore

DEFAULT_TOPICS = [Topics.JOINT_STATES, Topics.EE_POSE, Topics.TASK_STATE, Topics.REWARD,
                  Topics.EXECUTED_ACTION, Topics.EPISODE_STATUS]
QUEUE_DEPTH = 1000
DISCOVERY_PERIOD_S = 0.2
DRAIN_S = 0.5  # after a signal: what already arrived is still written (run_node drain_s)

PARAMETERS = {
    "output_dir": ("runs/demos/bags", ParameterDescriptor(
        description="folder that receives the bag folder", read_only=True)),
    "bag_name": ("", ParameterDescriptor(
        description="bag folder name ('': demo_<date>_<time>); it must not exist", read_only=True)),
    "topics": (DEFAULT_TOPICS, ParameterDescriptor(
        description="topics to record (relative names take the node's namespace)", read_only=True)),
    "topic_types": ([""], ParameterDescriptor(
        description="'topic=package/msg/Type' for topics whose type the graph may not show yet",
        read_only=True)),
    "flush_period_s": (DEFAULT_FLUSH_PERIOD_S, ParameterDescriptor(
        description="seconds between durable chunk writes: the most a SIGKILL can lose",
        floating_point_range=[FloatingPointRange(from_value=0.05, to_value=10.0)], read_only=True)),
}


def message_class(msgtype: str):
    """The Python class of ``package/msg/Type`` (what rosidl_runtime_py's get_message does)."""
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"message type {msgtype}: no Python class ({error})") from error


def _parse_topic_types(entries: list[str]) -> dict[str, str]:
    out = {}
    for entry in entries:
        if not entry:
            continue
        topic, sep, msgtype = entry.partition("=")
        if not sep or not topic or msgtype.count("/") != 2:
            raise ValueError(f"topic_types entry {entry!r}: expected 'topic=package/msg/Type'")
        out[topic.strip()] = msgtype.strip()
    return out


class DemoRecorderNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("demo_recorder", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        topics = [t for t in p["topics"] if t]
        if not topics:
            raise ValueError("topics: nothing to record")
        self._topics = {self.resolve_topic_name(t): t for t in topics}
        self._given_types = {self.resolve_topic_name(t): m
                             for t, m in _parse_topic_types(p["topic_types"]).items()}
        unknown = set(self._given_types) - set(self._topics)
        if unknown:
            raise ValueError(f"topic_types names topics that are not recorded: {sorted(unknown)}")
        name = p["bag_name"] or datetime.now().strftime("demo_%Y%m%d_%H%M%S")
        self.bag_path = Path(p["output_dir"]) / name
        self.bag_path.parent.mkdir(parents=True, exist_ok=True)
        self.typestore = message_typestore(self._given_types.values())
        self.recorder = BagRecorder(self.bag_path, self.typestore, p["flush_period_s"])
        self._recording: dict[str, object] = {}
        self.create_timer(DISCOVERY_PERIOD_S, self._on_discovery)
        self.create_timer(p["flush_period_s"] / 2, self.recorder.flush_if_due)
        self.get_logger().info(f"recording {sorted(self._topics)} into {self.bag_path}")

    # -------------------------------------------------------------- topics
    def _qos_for(self, topic: str) -> QoSProfile:
        offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
        reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
        latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
        return QoSProfile(depth=QUEUE_DEPTH,
                          reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)

    def _on_discovery(self) -> None:
        """Subscribe each topic once it has a publisher, with the QoS its publishers offer."""
        pending = {t for t in set(self._topics) - set(self._recording) if self.count_publishers(t)}
        if not pending:
            return
        graph_types = dict(self.get_topic_names_and_types())
        for topic in sorted(pending):
            types = [self._given_types[topic]] if topic in self._given_types else graph_types.get(topic, [])
            if len(types) != 1:
                self.get_logger().error(f"{topic} is published with types {types}: not recorded",
                                        throttle_duration_sec=10.0)
                continue
            msgtype = types[0]
            try:
                message_typestore([msgtype], self.typestore)
            except BagError as error:
                self.get_logger().error(f"{topic}: not recorded: {error}", throttle_duration_sec=10.0)
                continue
            self._subscribe(topic, msgtype, self._qos_for(topic))

    def _subscribe(self, topic: str, msgtype: str, qos: QoSProfile) -> None:
        self.recorder.add_topic(topic, msgtype)
        self._recording[topic] = self.create_subscription(
            message_class(msgtype), topic, lambda data, t=topic: self._on_message(t, data), qos, raw=True)
        self.get_logger().info(f"recording {topic} ({msgtype}, "
                               f"{'reliable' if qos.reliability == ReliabilityPolicy.RELIABLE else 'best effort'})")

    def _on_message(self, topic: str, data: bytes) -> None:
        if not self.recorder.closed:
            self.recorder.write(topic, self.get_clock().now().nanoseconds, data)

    # ------------------------------------------------------------ shutdown
    def counts(self) -> dict[str, int]:
        return {topic: info.count for topic, info in self.recorder.topics.items()}

    def destroy_node(self) -> None:
        if not self.recorder.closed:
            self.recorder.close()
            missing = sorted(set(self._topics) - set(self._recording))
            self.get_logger().info(
                f"bag {self.bag_path} closed: {self.recorder.message_count} messages "
                f"({', '.join(f'{t} {n}' for t, n in self.counts().items())})"
                + (f"; never published: {missing}" if missing else ""))
        super().destroy_node()


def main(args=None) -> None:
    # After SIGINT/SIGTERM, messages sent just before (the last label of a recording whose actor
    # has exited) are still taken and written before the bag closes.
    run_node(DemoRecorderNode, args=args, drain_s=DRAIN_S)


if __name__ == "__main__":
    main()
