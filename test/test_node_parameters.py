"""Parameters set from another node through the standard parameter services (what rqt and
`ros2 param set` use) either take effect or are refused as read-only: never accepted and ignored."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from hilserl_msgs.msg import Topics, Transition  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

from hilserl_learner.transition_monitor_node import TransitionMonitorNode  # noqa: E402
from hilserl_policy.random_actor_node import RandomActorNode  # noqa: E402


def set_remotely(ros, node_name: str, **values) -> list:
    """Set parameters of node_name from a second node; returns the SetParametersResult list."""
    client = AsyncParameterClient(ros.node(f"param_client_{len(ros._nodes)}"), node_name)
    assert client.wait_for_services(timeout_sec=10.0), f"{node_name} parameter services not found"
    future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
    assert wait_for(future.done, 10.0), "set_parameters got no answer"
    return list(future.result().results)


def transition_rate(ros, seconds: float) -> float:
    """New transitions per second: growth of the highest sequence number (resends do not count)."""
    highest = {"seq": -1}
    lock = threading.Lock()

    def on_transition(msg):
        with lock:
            highest["seq"] = max(highest["seq"], msg.sequence)
    node = ros.node(f"rate_probe_{len(ros._nodes)}")
    sub = node.create_subscription(Transition, Topics.TRANSITIONS, on_transition,
                                   QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    assert wait_for(lambda: highest["seq"] >= 0, 10.0)
    with lock:
        start = highest["seq"]
    time.sleep(seconds)
    with lock:
        end = highest["seq"]
    node.destroy_subscription(sub)
    return (end - start) / seconds


def test_random_actor_applies_rate_and_refuses_read_only(ros):
    actor = ros.add(RandomActorNode(context=ros.context))
    before = transition_rate(ros, 2.0)
    results = set_remotely(ros, "random_actor", rate_hz=50.0, episode_length=7, resend_after_s=0.5)
    assert all(r.successful for r in results), [r.reason for r in results]
    after = transition_rate(ros, 2.0)
    print(f"transitions/s: {before:.1f} at rate_hz 20, {after:.1f} after setting 50")
    assert 14.0 <= before <= 24.0 and 38.0 <= after <= 56.0
    assert actor._episode_length == 7 and actor._resend_after == 0.5
    for name, value in (("state_dim", 3), ("action_dim", 2), ("actor_id", "x"), ("seed", 5)):
        (result,) = set_remotely(ros, "random_actor", **{name: value})
        assert not result.successful and "read-only" in result.reason.lower(), (name, result.reason)
    (result,) = set_remotely(ros, "random_actor", rate_hz=5000.0)
    assert not result.successful  # outside the declared range
    assert actor.get_parameter("rate_hz").value == 50.0


def test_transition_monitor_applies_report_period(ros):
    monitor = ros.add(TransitionMonitorNode(context=ros.context))
    assert monitor._report_timer.timer_period_ns == 2_000_000_000
    results = set_remotely(ros, "transition_monitor", report_period_s=0.25)
    assert all(r.successful for r in results)
    assert wait_for(lambda: monitor._report_timer.timer_period_ns == 250_000_000, 2.0)


def test_transition_monitor_stores_a_resent_transition_once(ros):
    """A start-up resend delivers a transition twice: it is dropped, never stored twice."""
    monitor = ros.add(TransitionMonitorNode(context=ros.context))
    node = ros.node("resending_actor")
    pub = node.create_publisher(Transition, Topics.TRANSITIONS,
                                QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0)
    for sequence in (0, 1, 1, 2, 0, 3):
        pub.publish(Transition(actor_id="a", sequence=sequence))
    assert wait_for(lambda: "a" in monitor._tracker.actors()
                    and monitor._tracker.actors()["a"].highest_contiguous == 3, 10.0)
    stats = monitor._tracker.actors()["a"]
    assert (stats.received, stats.duplicates, stats.missing) == (4, 2, 0)
