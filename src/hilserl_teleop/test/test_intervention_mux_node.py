"""Intervention mux node over real DDS: toggles through the parameter service and SetBool
services take effect on the next action; one executed action per policy action; sync_human."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from hilserl_msgs.msg import Action, Topics  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from hilserl_teleop.intervention_mux_node import InterventionMuxNode  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Operator:
    """A second node: publishes policy and human actions, records executed ones, calls services."""

    def __init__(self, ros):
        self.node = ros.node("mux_operator")
        self.lock = threading.Lock()
        self.executed: list[Action] = []
        self.policy_pub = self.node.create_publisher(Action, Topics.POLICY_ACTION, RELIABLE)
        self.human_pub = self.node.create_publisher(Action, Topics.HUMAN_ACTION, RELIABLE)
        self.node.create_subscription(Action, Topics.EXECUTED_ACTION, self._on_executed, RELIABLE)
        self.params = self.node.create_client(SetParameters, "/intervention_mux/set_parameters")
        self.set_intervention = self.node.create_client(SetBool, Topics.SET_INTERVENTION)
        self.set_pause = self.node.create_client(SetBool, Topics.SET_PAUSE)

    def _on_executed(self, msg):
        with self.lock:
            self.executed.append(msg)

    def ready(self) -> bool:
        return (self.policy_pub.get_subscription_count() >= 1 and self.human_pub.get_subscription_count() >= 1
                and self.params.service_is_ready() and self.set_intervention.service_is_ready()
                and self.set_pause.service_is_ready())

    def action(self, pub, x: float, stamp_ns: int, source=Action.SOURCE_POLICY, intervention=False) -> None:
        msg = Action()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        msg.linear.x = float(x)
        msg.gripper = Action.GRIPPER_OPEN if source == Action.SOURCE_POLICY else Action.GRIPPER_CLOSE
        msg.source = source
        msg.intervention = intervention
        pub.publish(msg)

    def step(self, stamp_ns: int, x: float = 0.4) -> Action:
        """Publish one policy action and return the executed action it yields."""
        count = len(self.executed)
        self.action(self.policy_pub, x, stamp_ns)
        assert wait_for(lambda: len(self.executed) > count, 5.0), "no executed action"
        with self.lock:
            return self.executed[-1]

    def call(self, future):
        assert wait_for(future.done, 5.0)
        return future.result()

    def set_params(self, **values):
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        return self.call(self.params.call_async(request)).results


def _mux(ros, **params) -> InterventionMuxNode:
    return ros.add(InterventionMuxNode(context=ros.context,
                                       parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))


def _stamp(msg: Action) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_intervention_set_through_the_parameter_service_takes_effect_on_the_next_action(ros):
    # The human action below must stay fresh across parameter-service round trips, which can
    # take over the default 0.5 s human_timeout_s on a loaded machine; freshness is not tested here.
    mux = _mux(ros, handback_hold_steps=1, human_timeout_s=10.0)
    op = Operator(ros)
    assert wait_for(op.ready, 10.0)
    t = op.node.get_clock().now().nanoseconds
    op.action(op.human_pub, -0.7, t, source=Action.SOURCE_SCRIPTED, intervention=False)  # present, not active
    assert wait_for(lambda: mux._latest_human is not None, 5.0)

    first = op.step(t + 1)
    assert (first.source, first.intervention, first.linear.x, first.gripper) == (
        Action.SOURCE_POLICY, False, pytest.approx(0.4), Action.GRIPPER_OPEN)
    assert _stamp(first) == t + 1

    [result] = op.set_params(intervention=True)
    assert result.successful, result.reason
    taken = op.step(t + 2)
    assert (taken.source, taken.intervention, taken.linear.x, taken.gripper) == (
        Action.SOURCE_SCRIPTED, True, pytest.approx(-0.7), Action.GRIPPER_CLOSE)
    assert mux.get_parameter("intervention").value is True

    [result] = op.set_params(intervention=False)
    assert result.successful
    handback = op.step(t + 3)
    assert (handback.source, handback.intervention, handback.linear.x) == (Action.SOURCE_POLICY, False, 0.0)
    assert op.step(t + 4).linear.x == pytest.approx(0.4)
    assert [(s.first_step, s.last_step, s.first_stamp) for s in mux.mux.segments] == [(1, 1, t + 2)]

    [bad] = op.set_params(input_source="joystick")
    assert not bad.successful and "input_source" in bad.reason
    [bad] = op.set_params(human_timeout_s=-1.0)
    assert not bad.successful
    # input_source takes effect: the simulated human no longer counts for 'spacemouse'
    assert all(r.successful for r in op.set_params(input_source="spacemouse", intervention=True))
    silent = op.step(t + 5)
    assert (silent.intervention, silent.linear.x, silent.source) == (True, 0.0, Action.SOURCE_SCRIPTED)


def test_setbool_services_toggle_pause_and_intervention(ros):
    mux = _mux(ros, handback_hold_steps=0)
    op = Operator(ros)
    assert wait_for(op.ready, 10.0)
    t = op.node.get_clock().now().nanoseconds
    answer = op.call(op.set_pause.call_async(SetBool.Request(data=True)))
    assert answer.success and answer.message == "pause_policy on"
    assert mux.get_parameter("pause_policy").value is True
    paused = op.step(t + 1)
    assert (paused.linear.x, paused.gripper, paused.source, paused.intervention) == (
        0.0, Action.GRIPPER_STAY, Action.SOURCE_POLICY, False)

    answer = op.call(op.set_intervention.call_async(SetBool.Request(data=True)))
    assert answer.success and answer.message == "intervention on"
    op.action(op.human_pub, 0.9, t + 2, source=Action.SOURCE_HUMAN, intervention=False)
    assert wait_for(lambda: mux._latest_human is not None, 5.0)
    human = op.step(t + 2)
    assert (human.linear.x, human.source, human.intervention) == (pytest.approx(0.9), Action.SOURCE_HUMAN, True)

    op.call(op.set_intervention.call_async(SetBool.Request(data=False)))
    op.call(op.set_pause.call_async(SetBool.Request(data=False)))
    assert op.step(t + 3).linear.x == pytest.approx(0.4)


def test_one_executed_action_per_policy_action_and_active_human_takes_over(ros):
    mux = _mux(ros, handback_hold_steps=0, human_timeout_s=0.5)
    op = Operator(ros)
    assert wait_for(op.ready, 10.0)
    t = op.node.get_clock().now().nanoseconds
    stamps = [t + i for i in range(1, 41)]
    for i, stamp in enumerate(stamps):
        if 10 <= i <= 20:  # active human for 10..19, then released
            op.action(op.human_pub, -0.2 if i < 20 else 0.0, stamp, source=Action.SOURCE_SCRIPTED,
                      intervention=i < 20)
            # this stamp's human action is in (not only an older one): the policy action
            # must not overtake it on the other topic
            assert wait_for(lambda: stamp in mux._humans, 5.0)
        op.step(stamp)
    with op.lock:
        executed = list(op.executed)
    assert [_stamp(m) for m in executed] == stamps
    assert [m.intervention for m in executed] == [10 <= i < 20 for i in range(40)]
    assert [(s.first_step, s.last_step) for s in mux.mux.segments] == [(10, 19)]


def test_sync_human_waits_for_the_matching_stamp_then_decides(ros):
    mux = _mux(ros, sync_human=True, human_wait_s=3.0, handback_hold_steps=0)
    op = Operator(ros)
    assert wait_for(op.ready, 10.0)
    t = op.node.get_clock().now().nanoseconds
    count = len(op.executed)
    op.action(op.policy_pub, 0.4, t + 1)
    time.sleep(0.3)
    assert len(op.executed) == count  # waiting for the human action of this stamp
    op.action(op.human_pub, -0.3, t + 1, source=Action.SOURCE_SCRIPTED, intervention=True)
    assert wait_for(lambda: len(op.executed) > count, 5.0)
    decided = op.executed[-1]
    assert (_stamp(decided), decided.intervention, decided.linear.x) == (t + 1, True, pytest.approx(-0.3))
    # a human action that already arrived is used at once
    op.action(op.human_pub, 0.0, t + 2, source=Action.SOURCE_SCRIPTED, intervention=False)
    assert wait_for(lambda: t + 2 in mux._humans, 5.0)
    start = time.monotonic()
    passed = op.step(t + 2)
    assert time.monotonic() - start < 2.0 and passed.linear.x == pytest.approx(0.4) and not passed.intervention
    # no human action for this stamp: decided at the deadline
    [ok] = op.set_params(human_wait_s=0.1)
    assert ok.successful
    start = time.monotonic()
    late = op.step(t + 3)
    waited = time.monotonic() - start
    print(f"sync_human: decided after {waited * 1e3:.0f} ms without a matching human action (wait 100 ms)")
    assert 0.09 <= waited < 2.0 and mux.waited_out == 1 and _stamp(late) == t + 3
