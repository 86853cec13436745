"""Simulated human node over real DDS with the lock-step bridge: one human action per frame
with the frame's stamp, the expert picks the cube through it, rule changes take effect."""

from __future__ import annotations

import threading

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from hilserl_msgs.msg import Action, EpisodeStatus, Reward, Topics  # noqa: E402
from hilserl_msgs.srv import ResetEpisode  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

import time  # noqa: E402

import numpy as np  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hilserl_sim.expert import EXPERT_DEFAULTS  # noqa: E402
from hilserl_sim.scenes import ARMS  # noqa: E402
from hilserl_sim.sim_bridge_node import SimBridgeNode  # noqa: E402
from hilserl_sim.simulated_human import InterventionRule, SimulatedHuman  # noqa: E402
from hilserl_sim.simulated_human_node import SimulatedHumanNode  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class Follower:
    """Plays actor + mux + limiter: executes the simulated human's action of every frame."""

    def __init__(self, ros):
        self.node = ros.node("human_follower")
        self.lock = threading.Lock()
        self.rewards: list[Reward] = []
        self.humans: list[Action] = []
        self.node.create_subscription(Reward, Topics.REWARD, self._keep(self.rewards), RELIABLE)
        self.node.create_subscription(Action, Topics.HUMAN_ACTION, self._keep(self.humans), RELIABLE)
        self.command_pub = self.node.create_publisher(Action, Topics.COMMAND, RELIABLE)
        self.status_pub = self.node.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
        self.reset_client = self.node.create_client(ResetEpisode, Topics.RESET_EPISODE)
        self.params = self.node.create_client(SetParameters, "/simulated_human/set_parameters")

    def _keep(self, store):
        def callback(msg):
            with self.lock:
                store.append(msg)
        return callback

    def human_for(self, stamp: int) -> Action | None:
        with self.lock:
            return next((h for h in self.humans if _ns(h.header) == stamp), None)

    def reset(self, seed: int) -> None:
        count = len(self.rewards)
        future = self.reset_client.call_async(ResetEpisode.Request(use_seed=True, seed=seed))
        assert wait_for(future.done, 20.0) and future.result().success
        assert wait_for(lambda: len(self.rewards) > count, 5.0)

    def run_episode(self, episode: int, max_steps: int = 100, evaluation: bool = False) -> tuple[bool, list[Action]]:
        """Execute the human's action of each frame until success or max_steps."""
        used = []
        for step in range(max_steps):
            with self.lock:
                frame = self.rewards[-1]
            stamp = _ns(frame.header)
            assert wait_for(lambda: self.human_for(stamp) is not None, 5.0), f"no human action at step {step}"
            human = self.human_for(stamp)
            used.append(human)
            self.status(episode, step, EpisodeStatus.END_RUNNING, evaluation=evaluation)
            count = len(self.rewards)
            command = Action(header=human.header, linear=human.linear, angular=human.angular,
                             gripper=human.gripper, source=human.source, intervention=human.intervention)
            self.command_pub.publish(command)
            assert wait_for(lambda: len(self.rewards) > count, 5.0)
            if self.rewards[-1].success:
                self.status(episode, step + 1, EpisodeStatus.END_SUCCESS, success=True)
                return True, used
        self.status(episode, max_steps, EpisodeStatus.END_TIMEOUT)
        return False, used

    def status(self, episode, step, end_reason, success=False, evaluation=False) -> None:
        self.status_pub.publish(EpisodeStatus(actor_id="test", episode_id=episode, step=step,
                                              end_reason=end_reason, success=success, evaluation=evaluation))


def test_one_human_action_per_frame_and_the_expert_picks_the_cube(ros):
    ros.add(SimBridgeNode(context=ros.context, parameter_overrides=[
        Parameter("mode", value="lockstep"), Parameter("cameras", value=[]), Parameter("seed", value=1)]))
    human = ros.add(SimulatedHumanNode(context=ros.context, parameter_overrides=[Parameter("rule", value="always")]))
    follower = Follower(ros)
    assert wait_for(lambda: follower.command_pub.get_subscription_count() >= 1
                    and follower.reset_client.service_is_ready() and follower.params.service_is_ready()
                    and human.count_publishers(Topics.REWARD) >= 1, 10.0)
    follower.reset(seed=4)
    success, used = follower.run_episode(0)

    def every_frame_answered() -> bool:
        with follower.lock:
            return {_ns(r.header) for r in follower.rewards[1:]} <= {_ns(h.header) for h in follower.humans}

    # the answer to the last (success) frame may still be on its way when the episode ends
    wait_for(every_frame_answered, 5.0)
    with follower.lock:
        frames = [_ns(r.header) for r in follower.rewards]
        human_stamps = [_ns(h.header) for h in follower.humans]
    print(f"simulated human ('always'): success {success} after {len(used)} steps; {len(human_stamps)} human "
          f"actions for {len(frames)} frames seen by the follower; unmatched frames {human.unmatched_frames}")
    assert success and len(used) < 100
    assert all(h.intervention and h.source == Action.SOURCE_SCRIPTED for h in used)
    assert any(h.gripper == Action.GRIPPER_CLOSE for h in used)
    assert len(human_stamps) == len(set(human_stamps))  # one per frame
    assert set(frames[1:]) <= set(human_stamps)  # every frame since the reset answered, with its stamp
    assert human.unmatched_frames == 0

    # the rule, set through the parameter service, takes effect from the next episode
    request = SetParameters.Request(parameters=[Parameter("rule", value="never").to_parameter_msg()])
    future = follower.params.call_async(request)
    assert wait_for(future.done, 5.0) and future.result().results[0].successful
    bad = follower.params.call_async(SetParameters.Request(
        parameters=[Parameter("rule", value="sometimes").to_parameter_msg()]))
    assert wait_for(bad.done, 5.0)
    assert not bad.result().results[0].successful and "rule" in bad.result().results[0].reason
    follower.reset(seed=5)
    _, used = follower.run_episode(1, max_steps=5)
    assert [h.intervention for h in used] == [False] * 5
    assert human.human.episode == 1 and human.human.rule.kind == "never"

    # evaluation episodes measure the policy alone: no intervention whatever the rule
    future = follower.params.call_async(SetParameters.Request(
        parameters=[Parameter("rule", value="always").to_parameter_msg()]))
    assert wait_for(future.done, 5.0) and future.result().results[0].successful
    follower.status(2, 0, EpisodeStatus.END_RUNNING, evaluation=True)  # the actor announces it before the reset
    assert wait_for(lambda: human._evaluating, 5.0)
    follower.reset(seed=6)
    _, used = follower.run_episode(2, max_steps=5, evaluation=True)
    assert [h.intervention for h in used] == [False] * 5


def test_a_frame_whose_reward_arrives_before_its_poses_is_answered_on_its_own_poses(ros):
    # Under load the frame's topics reach the human in any order; the action must not depend on it.
    human = ros.add(SimulatedHumanNode(context=ros.context, parameter_overrides=[Parameter("rule", value="always")]))
    node = ros.node("frame_parts")
    publishers = {topic: node.create_publisher(kind, topic, RELIABLE) for topic, kind in (
        (Topics.REWARD, Reward), (Topics.EE_POSE, PoseStamped), (Topics.TASK_STATE, PoseStamped),
        (Topics.JOINT_STATES, JointState))}
    answers: list[Action] = []
    node.create_subscription(Action, Topics.HUMAN_ACTION, answers.append, RELIABLE)
    assert wait_for(lambda: all(human.count_subscribers(t) >= 1 for t in publishers)
                    and node.count_publishers(Topics.HUMAN_ACTION) >= 1, 10.0)
    arm = ARMS["panda"]
    frames = [((0.45, 0.0, 0.25), (0.55, 0.05, 0.02), arm.gripper_joint_open),
              ((0.50, 0.02, 0.10), (0.55, 0.05, 0.02), arm.gripper_joint_open)]

    def publish(stamp: int, ee, cube, q, order) -> None:
        messages = {Topics.REWARD: Reward(), Topics.EE_POSE: PoseStamped(), Topics.TASK_STATE: PoseStamped(),
                    Topics.JOINT_STATES: JointState(name=[arm.gripper_joint], position=[q])}
        for pose, xyz in ((messages[Topics.EE_POSE], ee), (messages[Topics.TASK_STATE], cube)):
            pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = xyz
        for topic in order:
            messages[topic].header.stamp.sec = stamp
            publishers[topic].publish(messages[topic])
            time.sleep(0.1)  # each part arrives on its own

    publish(1, *frames[0], (Topics.EE_POSE, Topics.TASK_STATE, Topics.JOINT_STATES, Topics.REWARD))
    assert wait_for(lambda: len(answers) == 1, 5.0)
    publish(2, *frames[1], (Topics.REWARD, Topics.EE_POSE, Topics.TASK_STATE, Topics.JOINT_STATES))
    assert wait_for(lambda: len(answers) == 2, 5.0)
    assert [a.header.stamp.sec for a in answers] == [1, 2] and human.unmatched_frames == 0

    expected = SimulatedHuman(InterventionRule(kind="always"), EXPERT_DEFAULTS["panda"], seed=0)
    expected.reset(0)
    for step, ((ee, cube, _), answer) in enumerate(zip(frames, answers)):
        intervening, deltas, gripper = expected.decide(step, np.array(ee), np.array(cube), 1.0)
        assert answer.intervention == intervening and answer.gripper == gripper
        np.testing.assert_allclose([answer.linear.x, answer.linear.y, answer.linear.z], deltas, atol=1e-9)
    # the two frames ask for different motions: answering frame 2 on frame 1's poses would show
    assert abs(answers[1].linear.z - answers[0].linear.z) > 1e-3 or abs(answers[1].linear.x - answers[0].linear.x) > 1e-3
