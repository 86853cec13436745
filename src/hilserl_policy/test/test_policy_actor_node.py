"""Policy actor node over real DDS against a minimal driver: what it does when the driver's
reset frame never arrives complete (the graph's first frame lost while a node between the
driver and the reward was still connecting): in lock-step no other frame would come."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hilserl_msgs.msg import EpisodeStatus, Reward, Topics  # noqa: E402
from hilserl_msgs.srv import ResetEpisode  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hilserl_policy.policy_actor_node import PolicyActorNode  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Driver:
    """Answers resets; publishes the reset's frame only from the ``publish_from``-th reset on."""

    def __init__(self, ros, publish_from: int):
        self.node = ros.node("driver")
        self.resets = 0
        self.publish_from = publish_from
        self.statuses: list[EpisodeStatus] = []
        self.joints = self.node.create_publisher(JointState, Topics.JOINT_STATES, RELIABLE)
        self.ee = self.node.create_publisher(PoseStamped, Topics.EE_POSE, RELIABLE)
        self.task = self.node.create_publisher(PoseStamped, Topics.TASK_STATE, RELIABLE)
        self.reward = self.node.create_publisher(Reward, Topics.REWARD, RELIABLE)
        self.node.create_service(ResetEpisode, Topics.RESET_EPISODE, self._on_reset)
        self.node.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self.statuses.append, RELIABLE)

    def _on_reset(self, request, response):
        self.resets += 1
        response.success, response.episode_id = True, self.resets
        if self.resets >= self.publish_from:
            stamp = self.node.get_clock().now().to_msg()
            joints = JointState(name=[f"joint{i}" for i in range(1, 8)] + ["right_driver_joint"],
                                position=[0.0] * 8, velocity=[0.0] * 8)
            ee, cube = PoseStamped(), PoseStamped()
            ee.pose.position.x, ee.pose.position.z = 0.5, 0.2
            cube.pose.position.x, cube.pose.position.z = 0.5, 0.02
            for publisher, msg in ((self.joints, joints), (self.ee, ee), (self.task, cube), (self.reward, Reward())):
                msg.header.stamp = stamp
                publisher.publish(msg)
        return response


def test_a_reset_whose_frame_never_arrives_is_retried(ros):
    driver = Driver(ros, publish_from=2)
    actor = ros.add(PolicyActorNode(context=ros.context, parameter_overrides=[
        Parameter("step_timeout_s", value=1.0)]))
    # The first reset's frame is lost: after step_timeout_s the actor resets again and starts
    # the episode on the second reset's frame (then waits for weights, which nobody sends).
    assert wait_for(lambda: actor.state == "ready", 15.0), f"actor state {actor.state}, resets {driver.resets}"
    assert driver.resets == 2 and actor.counters["reset_retries"] == 1
    ends = [s for s in driver.statuses if s.end_reason != EpisodeStatus.END_RUNNING]
    assert [(s.end_reason, s.step) for s in ends] == [(EpisodeStatus.END_ABORTED, 0)]
    assert "no first frame" in ends[0].detail


def test_observation_dynamics_reads_velocity_and_effort_from_joint_states(ros):
    import numpy as np

    from hilserl_policy.observation import ObservationLayout

    actor = ros.add(PolicyActorNode(context=ros.context, parameter_overrides=[
        Parameter("observation_dynamics", value=True), Parameter("observation_layout", value="relative")]))
    assert actor.layout == ObservationLayout("relative", num_joints=7, dynamics=True) and actor.layout.dim == 26
    assert actor.get_parameter("observation_dynamics").value is True
    assert actor.describe_parameters(["observation_dynamics"])[0].read_only
    names = [f"joint{i}" for i in range(1, 8)] + ["right_driver_joint"]
    joints = JointState(name=names, position=[0.0] * 7 + [0.4], velocity=[0.1 * i for i in range(8)],
                        effort=[-1.0 * i for i in range(8)])
    ee, cube = PoseStamped(), PoseStamped()
    ee.pose.position.x, ee.pose.position.z = 0.5, 0.2
    cube.pose.position.x, cube.pose.position.z = 0.5, 0.02
    state = actor.observation({"joints": joints, "ee": ee, "task": cube})
    np.testing.assert_allclose(state[:10], [0.5, 0.5, 0.0, 0.2, 0.5, 0.0, 0.02, 0.0, 0.0, -1.8], atol=1e-6)
    np.testing.assert_allclose(state[10:], [0.1 * i for i in range(8)] + [-1.0 * i for i in range(8)], atol=1e-6)
    joints.effort = []  # a driver that reports no efforts
    with pytest.raises(ValueError, match="effort"):
        actor.observation({"joints": joints, "ee": ee, "task": cube})
    with pytest.raises(ValueError, match="observation_dynamics"):
        PolicyActorNode(context=ros.context, parameter_overrides=[
            Parameter("observation_dynamics", value=True), Parameter("observation_layout", value="state")])
