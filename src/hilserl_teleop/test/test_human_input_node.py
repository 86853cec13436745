"""Human input node over real DDS, in-process with the real intervention mux: a keyboard on a
pseudo-terminal (the node's keyboard.path is a symlink the test re-points: hot-plug) ->
human actions; the toggle key -> the mux's take-over; a hang-up while driving -> the policy
paused and publishing stopped; runtime scale; refused parameters; a device with a deadband
(a stand-in module) rebuilt at run time and fed the follower's state."""

from __future__ import annotations

import os
import queue
import sys
import termios
import threading
import time
import types

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hilserl_msgs.msg import Action, Topics  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hilserl_teleop.devices.base import DeviceError, DeviceReader, HumanCommand  # noqa: E402
from hilserl_teleop.human_input_node import HumanInputNode  # noqa: E402
from hilserl_teleop.intervention_mux_node import InterventionMuxNode  # noqa: E402

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
RELEASE_S, REPEAT_DELAY_S, RATE_HZ = 0.15, 0.3, 20.0


class Terminal:
    """A pty whose slave the node reaches through ``link`` (re-pointed by ``replace``)."""

    def __init__(self, link) -> None:
        self.link = link
        self.master = self.slave = None
        self.replace()

    def replace(self) -> None:
        self.close()
        self.master, self.slave = os.openpty()
        tmp = f"{self.link}.new"
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, self.link)

    def reader_open(self) -> bool:
        return not termios.tcgetattr(self.slave)[3] & termios.ICANON

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def hang_up(self) -> None:
        os.close(self.master)
        self.master = None

    def close(self) -> None:
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None


class Operator:
    """Records human actions; sets parameters of a node like rqt does."""

    def __init__(self, ros) -> None:
        self.node = ros.node("human_input_operator")
        self.lock = threading.Lock()
        self.actions: list[tuple[float, Action]] = []
        self.node.create_subscription(Action, Topics.HUMAN_ACTION, self._on_action, RELIABLE)
        self.params = self.node.create_client(SetParameters, "/human_input/set_parameters")

    def _on_action(self, msg: Action) -> None:
        with self.lock:
            self.actions.append((time.monotonic(), msg))

    def ready(self) -> bool:
        return self.node.count_publishers(Topics.HUMAN_ACTION) >= 1 and self.params.service_is_ready()

    def count(self) -> int:
        with self.lock:
            return len(self.actions)

    def since(self, index: int) -> list[Action]:
        with self.lock:
            return [msg for _, msg in self.actions[index:]]

    def wait_action(self, predicate, start: int = 0, timeout: float = 5.0) -> Action:
        found = []
        assert wait_for(lambda: found.extend(m for m in self.since(start) if predicate(m)) or found, timeout), \
            f"no such human action; got {[_deltas(m) for m in self.since(start)]}"
        return found[0]

    def set_params(self, **values):
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        future = self.params.call_async(request)
        assert wait_for(future.done, 5.0)
        return future.result().results


def _deltas(msg: Action) -> list[float]:
    return [msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z]


@pytest.fixture
def terminal(tmp_path):
    term = Terminal(tmp_path / "keyboard_tty")
    yield term
    term.close()


def _keyboard_node(ros, terminal, **params) -> HumanInputNode:
    values = {"device": "keyboard", "keyboard.path": str(terminal.link), "keyboard.release_s": RELEASE_S,
              "keyboard.repeat_delay_s": REPEAT_DELAY_S, "rate_hz": RATE_HZ, "reconnect_period_s": 0.1, **params}
    node = ros.add(HumanInputNode(context=ros.context,
                                  parameter_overrides=[Parameter(k, value=v) for k, v in values.items()]))
    assert wait_for(terminal.reader_open, 5.0), "the node did not open the keyboard"
    return node


def _graph(ros, terminal, **params):
    mux = ros.add(InterventionMuxNode(context=ros.context))
    node = _keyboard_node(ros, terminal, **params)
    op = Operator(ros)
    assert wait_for(lambda: op.ready() and node._set_intervention.service_is_ready()
                    and node._set_pause.service_is_ready() and node.count_subscribers(Topics.HUMAN_ACTION) >= 2,
                    10.0)
    return mux, node, op


def test_keys_become_human_actions_at_rate_while_held_and_a_toggle_takes_over(ros, terminal):
    mux, node, op = _graph(ros, terminal)
    terminal.type(b"w")
    first = op.wait_action(lambda m: m.intervention)
    assert _deltas(first) == pytest.approx([0.5, 0, 0, 0, 0, 0])
    assert (first.source, first.header.frame_id, first.gripper) == (Action.SOURCE_HUMAN, "keyboard",
                                                                     Action.GRIPPER_STAY)
    assert abs(rclpy.time.Time.from_msg(first.header.stamp).nanoseconds
               - node.get_clock().now().nanoseconds) < 2e9
    # A tap is held for repeat_delay_s: published on the press, then at rate_hz, then the release.
    released = op.wait_action(lambda m: not m.intervention, start=0)
    assert _deltas(released) == [0.0] * 6
    held = [m for m in op.since(0) if m.intervention]
    assert 0.5 * REPEAT_DELAY_S * RATE_HZ <= len(held) <= REPEAT_DELAY_S * RATE_HZ + 3, len(held)
    assert all(_deltas(m) == pytest.approx([0.5, 0, 0, 0, 0, 0]) for m in held)
    quiet = op.count()
    time.sleep(0.3)
    assert op.count() == quiet  # nothing held: nothing published

    terminal.type(b"E")  # upper case: fast
    assert _deltas(op.wait_action(lambda m: m.angular.z != 0, start=quiet)) == pytest.approx([0, 0, 0, 0, 0, -1])

    assert mux.get_parameter("intervention").value is False
    terminal.type(b"i")
    assert wait_for(lambda: mux.get_parameter("intervention").value is True, 5.0)
    time.sleep(REPEAT_DELAY_S + 0.05)  # let go of i
    terminal.type(b"\t")
    assert wait_for(lambda: mux.get_parameter("intervention").value is False, 5.0)


def test_runtime_scale_and_refused_parameters(ros, terminal):
    _mux, node, op = _graph(ros, terminal)
    [ok] = op.set_params(scale=0.5)
    assert ok.successful, ok.reason
    terminal.type(b"R")
    assert _deltas(op.wait_action(lambda m: m.intervention)) == pytest.approx([0, 0, 0.5, 0, 0, 0])
    for bad in ({"scale": -1.0}, {"scale": 5.0}, {"scale": "big"}, {"rate_hz": 0.0},
                {"keyboard.release_s": 1.0}, {"device": "gamepad"}):
        [result] = op.set_params(**bad)
        assert not result.successful, bad
    assert node.get_parameter("scale").value == 0.5 and node.config.scale == 0.5
    with pytest.raises(ValueError, match="device must be one of"):
        HumanInputNode(context=ros.context, parameter_overrides=[Parameter("device", value="joystick")])


def test_hang_up_while_driving_pauses_the_policy_stops_publishing_and_hot_plug_resumes(ros, terminal):
    mux, node, op = _graph(ros, terminal)
    terminal.type(b"w")
    op.wait_action(lambda m: m.intervention)
    terminal.hang_up()
    assert wait_for(lambda: mux.get_parameter("pause_policy").value is True, 5.0)
    time.sleep(0.1)
    stopped = op.count()
    last = op.since(stopped - 1)[0]
    assert _deltas(last) == [0.0] * 6 and last.intervention  # the hold, then silence
    time.sleep(0.5)  # longer than the release and a few reconnect periods
    assert op.count() == stopped

    terminal.replace()  # the keyboard is back (same link, new terminal)
    assert wait_for(terminal.reader_open, 5.0)
    terminal.type(b"a")
    back = op.wait_action(lambda m: m.intervention, start=stopped)
    assert _deltas(back) == pytest.approx([0, 0.5, 0, 0, 0, 0])
    assert mux.get_parameter("pause_policy").value is True  # a person lifts the pause, not the node


def test_hang_up_while_idle_pauses_nothing(ros, terminal):
    mux, node, op = _graph(ros, terminal)
    terminal.type(b"w")
    op.wait_action(lambda m: not m.intervention)  # pressed and released
    count = op.count()
    terminal.hang_up()
    time.sleep(0.4)
    assert op.count() == count and mux.get_parameter("pause_policy").value is False


class StandInReader(DeviceReader):
    """A device with a deadband: commands come from a queue; records follow() calls. ``made``
    lists the readers opened (the node also builds readers to validate parameters)."""

    name = "gamepad"

    def __init__(self, deadband: float, made: list) -> None:
        self.deadband, self.inputs, self.followed, self.closed, self.made = deadband, queue.Queue(), [], False, made

    def open(self) -> None:
        self.closed = False
        self.made.append(self)

    def read(self, timeout_s: float):
        try:
            raw = self.inputs.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if isinstance(raw, DeviceError):
            raise raw
        return HumanCommand(np.array([max(0.0, raw - self.deadband), 0, 0, 0, 0, 0]), active=True)

    def close(self) -> None:
        self.closed = True

    def follow(self, joint_names, joint_positions, ee_position=None) -> None:
        self.followed.append((list(joint_names), list(joint_positions), ee_position))


@pytest.fixture
def gamepad(monkeypatch):
    made: list[StandInReader] = []

    def make_reader(values):
        if not 0.0 <= values["deadband"] < 1.0:
            raise ValueError(f"gamepad.deadband must be in [0, 1), got {values['deadband']!r}")
        return StandInReader(values["deadband"], made)

    module = types.ModuleType("hilserl_teleop.devices.gamepad")
    module.PARAMETERS = {"deadband": (0.1, "raw magnitude read as 0"), "device_index": (0, "which pad")}
    module.make_reader = make_reader
    monkeypatch.setitem(sys.modules, "hilserl_teleop.devices.gamepad", module)
    return made


def test_a_deadband_set_at_run_time_rebuilds_the_reader_and_follow_gets_the_follower(ros, gamepad):
    node = ros.add(HumanInputNode(context=ros.context, parameter_overrides=[Parameter("device", value="gamepad")]))
    op = Operator(ros)
    assert wait_for(lambda: op.ready() and gamepad, 5.0)
    gamepad[-1].inputs.put(0.5)
    assert op.wait_action(lambda m: m.intervention).linear.x == pytest.approx(0.4)
    assert op.wait_action(lambda m: m.header.frame_id == "gamepad").source == Action.SOURCE_HUMAN

    [ok] = op.set_params(**{"gamepad.deadband": 0.3})
    assert ok.successful, ok.reason
    assert wait_for(lambda: len(gamepad) == 2 and gamepad[0].closed, 5.0)
    start = op.count()
    gamepad[-1].inputs.put(0.5)
    assert op.wait_action(lambda m: True, start=start).linear.x == pytest.approx(0.2)
    [bad] = op.set_params(**{"gamepad.deadband": 1.5})
    assert not bad.successful and "gamepad.deadband" in bad.reason
    [read_only] = op.set_params(**{"gamepad.device_index": 1})
    assert not read_only.successful
    assert len(gamepad) == 2

    joints = op.node.create_publisher(JointState, Topics.JOINT_STATES, RELIABLE)
    ee = op.node.create_publisher(PoseStamped, Topics.EE_POSE, RELIABLE)
    assert wait_for(lambda: joints.get_subscription_count() and ee.get_subscription_count(), 5.0)
    pose = PoseStamped()
    pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = 0.3, -0.1, 0.2
    ee.publish(pose)
    joints.publish(JointState(name=["shoulder", "elbow"], position=[0.5, -1.0]))
    assert wait_for(lambda: gamepad[-1].followed and gamepad[-1].followed[-1][2] is not None, 5.0)
    assert gamepad[-1].followed[-1] == (["shoulder", "elbow"], [0.5, -1.0], [0.3, -0.1, 0.2])

    gamepad[-1].inputs.put(DeviceError("gamepad: unplugged"))  # driving (last command active)
    assert wait_for(lambda: len(gamepad) >= 3, 5.0)  # re-opened at once: a stand-in opens always
    assert node.published >= 3
