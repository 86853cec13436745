"""The human-in-the-loop chain over real DDS, parameters from config/hil.yaml:

test actor --policy_action--> intervention_mux <--human_action-- simulated_human
                                   | executed_action                  ^ frames
                                   v                                  |
                              safety_limiter --command--> lock-step MuJoCo bridge

Every policy action yields exactly one command with its stamp; interventions (the mux
toggle through its service, then the simulated human's own rule) flip source and flag,
and the mux records the intervention segments exactly.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from hilserl_msgs.msg import Action, EpisodeStatus, Reward, Topics  # noqa: E402
from hilserl_msgs.srv import ResetEpisode  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "config" / "hil.yaml"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _params(node_name: str, **overrides) -> list[Parameter]:
    values = yaml.safe_load(CONFIG.read_text())[node_name]["ros__parameters"]
    values.update(overrides)
    return [Parameter(k, value=v) for k, v in values.items()]


class ChainActor:
    """Publishes one policy action per frame and records the commands that reached the bridge."""

    def __init__(self, ros, seed: int = 0):
        self.node = ros.node("chain_actor")
        self.lock = threading.Lock()
        self.rewards: list[Reward] = []
        self.commands: dict[int, list[Action]] = {}
        self.rng = np.random.default_rng(seed)
        self.policy_pub = self.node.create_publisher(Action, Topics.POLICY_ACTION, RELIABLE)
        self.status_pub = self.node.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
        self.node.create_subscription(Reward, Topics.REWARD, self._on_reward, RELIABLE)
        self.node.create_subscription(Action, Topics.COMMAND, self._on_command, RELIABLE)
        self.humans: dict[int, Action] = {}
        self.node.create_subscription(Action, Topics.HUMAN_ACTION, self._on_human, RELIABLE)
        self.reset_client = self.node.create_client(ResetEpisode, Topics.RESET_EPISODE)
        self.set_intervention = self.node.create_client(SetBool, Topics.SET_INTERVENTION)
        self.human_params = self.node.create_client(SetParameters, "/simulated_human/set_parameters")
        self.stamps: list[int] = []
        self.episode = 0
        self.episode_step = 0

    def _on_reward(self, msg):
        with self.lock:
            self.rewards.append(msg)

    def _on_human(self, msg):
        with self.lock:
            self.humans[_ns(msg.header)] = msg

    def _on_command(self, msg):
        with self.lock:
            self.commands.setdefault(_ns(msg.header), []).append(msg)

    def call(self, future, timeout=20.0):
        assert wait_for(future.done, timeout)
        return future.result()

    def reset(self, seed: int) -> None:
        count = len(self.rewards)
        assert self.call(self.reset_client.call_async(ResetEpisode.Request(use_seed=True, seed=seed))).success
        assert wait_for(lambda: len(self.rewards) > count, 5.0)

    def step(self) -> Action:
        """Act on the latest frame; return the command that came back for it."""
        with self.lock:
            frame = self.rewards[-1]
        count = len(self.rewards)
        msg = Action()
        msg.header.stamp = frame.header.stamp
        msg.linear.x, msg.linear.y, msg.linear.z = (float(v) for v in self.rng.uniform(-0.5, 0.5, 3))
        msg.gripper = Action.GRIPPER_OPEN
        msg.source = Action.SOURCE_POLICY
        stamp = _ns(frame.header)
        self.stamps.append(stamp)
        self.policy_pub.publish(msg)
        self.status_pub.publish(EpisodeStatus(actor_id="chain", episode_id=self.episode, step=self.episode_step,
                                              end_reason=EpisodeStatus.END_RUNNING))
        self.episode_step += 1
        assert wait_for(lambda: stamp in self.commands, 10.0), f"no command for policy action {len(self.stamps)}"
        assert wait_for(lambda: len(self.rewards) > count, 10.0), "the bridge did not step"
        return self.commands[stamp][0]

    def end_episode(self) -> None:
        self.status_pub.publish(EpisodeStatus(actor_id="chain", episode_id=self.episode, step=self.episode_step,
                                              end_reason=EpisodeStatus.END_TIMEOUT))
        self.episode += 1
        self.episode_step = 0


def test_policy_human_chain_one_command_per_action_and_exact_segments(ros):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from hilserl_drivers.safety_limiter_node import SafetyLimiterNode
    from hilserl_sim.sim_bridge_node import SimBridgeNode
    from hilserl_sim.simulated_human_node import SimulatedHumanNode
    from hilserl_teleop.intervention_mux_node import InterventionMuxNode

    ros.add(SimBridgeNode(context=ros.context, parameter_overrides=[
        Parameter("mode", value="lockstep"), Parameter("cameras", value=[]), Parameter("seed", value=2)]))
    human = ros.add(SimulatedHumanNode(context=ros.context, parameter_overrides=_params("simulated_human",
                                                                                      rule="never")))
    mux_node = ros.add(InterventionMuxNode(context=ros.context, parameter_overrides=_params(
        "intervention_mux", human_wait_s=2.0)))  # generous: two shared cores under test load
    limiter = ros.add(SafetyLimiterNode(context=ros.context, parameter_overrides=_params("safety_limiter")))
    actor = ChainActor(ros)
    assert wait_for(lambda: actor.policy_pub.get_subscription_count() >= 1
                    and actor.reset_client.service_is_ready() and actor.set_intervention.service_is_ready()
                    and actor.human_params.service_is_ready()
                    and limiter.count_publishers(Topics.EXECUTED_ACTION) >= 1
                    and mux_node.count_publishers(Topics.HUMAN_ACTION) >= 1, 15.0)
    actor.reset(seed=3)
    hold_steps = mux_node.get_parameter("handback_hold_steps").value

    commands = []
    for step in range(30):
        if step == 10:
            assert actor.call(actor.set_intervention.call_async(SetBool.Request(data=True))).success
        if step == 20:
            assert actor.call(actor.set_intervention.call_async(SetBool.Request(data=False))).success
        commands.append(actor.step())
    # the simulated human takes over whole episodes from the next one on
    result = actor.call(actor.human_params.call_async(SetParameters.Request(
        parameters=[Parameter("rule", value="always").to_parameter_msg()])))
    assert result.results[0].successful
    actor.end_episode()
    actor.reset(seed=4)
    for _ in range(10):
        commands.append(actor.step())

    with actor.lock:
        per_stamp = {stamp: len(msgs) for stamp, msgs in actor.commands.items()}
    sources = [c.source for c in commands]
    flags = [c.intervention for c in commands]
    segments = [(s.first_step, s.last_step, s.first_stamp, s.last_stamp) for s in mux_node.mux.all_segments()]
    print(f"chain: {len(actor.stamps)} policy actions, {sum(per_stamp.values())} commands; segments "
          f"{[(a, b) for a, b, _, _ in segments]}; mux counts {mux_node.mux.counts}; sync waits out "
          f"{mux_node.waited_out}; limiter rejections {sum(limiter.limiter.rejections.values())}, clamped "
          f"{limiter.limiter.clamped}; simulated human published {human.published}")
    assert len(actor.stamps) == len(set(actor.stamps)) == 40
    assert per_stamp == {stamp: 1 for stamp in actor.stamps}  # exactly one command per policy action
    expected_flags = [10 <= i < 20 or i >= 30 for i in range(40)]
    assert flags == expected_flags
    assert sources == [Action.SOURCE_SCRIPTED if f else Action.SOURCE_POLICY for f in expected_flags]
    held = [i for i, c in enumerate(commands) if not flags[i]
            and (c.linear.x, c.linear.y, c.linear.z, c.gripper) == (0.0, 0.0, 0.0, Action.GRIPPER_STAY)]
    assert held == list(range(20, 20 + hold_steps))  # the hand-back countdown, nothing else holds
    assert segments == [(10, 19, actor.stamps[10], actor.stamps[19]), (30, 39, actor.stamps[30], actor.stamps[39])]
    assert mux_node.waited_out == 0  # every decision had its simulated-human action
    assert sum(limiter.limiter.rejections.values()) == 0
    # while the human is in control the command is the simulated human's action of that frame
    assert limiter.limiter.clamped == 0
    for i in [*range(10, 20), *range(30, 40)]:
        h, c = actor.humans[actor.stamps[i]], commands[i]
        assert (c.linear.x, c.linear.y, c.linear.z, c.gripper) == pytest.approx(
            (h.linear.x, h.linear.y, h.linear.z, h.gripper))
