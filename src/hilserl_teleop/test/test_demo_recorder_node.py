"""Demo recorder over real DDS: every message of reliable and best-effort publishers in the
bag, in order, as published bytes; R8: SIGINT and SIGTERM keep every message and write the
metadata, SIGKILL loses at most the flush period and the bag recovers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hilserl_msgs")

from hilserl_msgs.msg import EpisodeStatus, Topics  # noqa: E402
from hilserl_testing import isolated_environment, wait_for  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hilserl_teleop.demo_bag import read_bag, recover_bag  # noqa: E402
from hilserl_teleop.demo_recorder_node import DemoRecorderNode  # noqa: E402

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def joint_state(i: int) -> JointState:
    msg = JointState(name=["a", "b"], position=[0.001 * i, -0.001 * i], velocity=[0.0, 0.0])
    msg.header.stamp.sec = i
    return msg


def status(i: int) -> EpisodeStatus:
    return EpisodeStatus(actor_id="demo", episode_id=i // 20, step=i % 20, success=i % 20 == 19,
                         end_reason=EpisodeStatus.END_SUCCESS if i % 20 == 19 else EpisodeStatus.END_RUNNING)


def test_every_message_of_each_topic_is_in_the_bag_in_order(ros, tmp_path):
    from rclpy.parameter import Parameter

    pub_node = ros.node("demo_source")
    joints = pub_node.create_publisher(JointState, Topics.JOINT_STATES, qos_profile_sensor_data)
    episodes = pub_node.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
    recorder = DemoRecorderNode(context=ros.context, parameter_overrides=[
        Parameter("output_dir", value=str(tmp_path)), Parameter("bag_name", value="bag"),
        Parameter("topics", value=[Topics.JOINT_STATES, Topics.EPISODE_STATUS, "never/published"])])
    ros.add(recorder)
    assert wait_for(lambda: len(recorder._recording) == 2, 10.0)
    assert wait_for(lambda: joints.get_subscription_count() and episodes.get_subscription_count(), 10.0)
    for i in range(100):
        joints.publish(joint_state(i))
        episodes.publish(status(i))
        time.sleep(0.002)  # a sensor stream's pace; best effort must not overflow here
    assert wait_for(lambda: recorder.recorder.message_count == 200, 10.0), recorder.counts()
    ros.executor.remove_node(recorder)
    recorder.destroy_node()

    # The bytes as they came off the wire (CDR alignment padding may differ from a local
    # serialisation, so the messages are compared).
    classes = {"/" + Topics.JOINT_STATES: JointState, "/" + Topics.EPISODE_STATUS: EpisodeStatus}
    got: dict[str, list] = {t: [] for t in classes}
    stamps = []
    for topic, msgtype, stamp, data in read_bag(tmp_path / "bag"):
        got[topic].append(deserialize_message(data, classes[topic]))
        stamps.append(stamp)
    assert got == {"/" + Topics.JOINT_STATES: [joint_state(i) for i in range(100)],
                   "/" + Topics.EPISODE_STATUS: [status(i) for i in range(100)]}
    assert stamps == sorted(stamps)
    labels = got["/" + Topics.EPISODE_STATUS]
    assert [m.episode_id for m in labels if m.end_reason == EpisodeStatus.END_SUCCESS] == [0, 1, 2, 3, 4]
    with open(tmp_path / "bag" / "bag.mcap", "rb") as handle:  # an independent reader agrees
        assert sum(1 for _ in make_reader(handle).iter_messages()) == 200


def _start_recorder(domain_id: int, folder, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hilserl_teleop.demo_recorder_node", "--ros-args",
         "-p", f"output_dir:={folder}", "-p", f"bag_name:={name}",
         "-p", f"topics:=['{Topics.EPISODE_STATUS}']",
         "-p", f"topic_types:=['{Topics.EPISODE_STATUS}=hilserl_msgs/msg/EpisodeStatus']"],
        env=isolated_environment(domain_id), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_r8_recorder_signals(ros, tmp_path, sig):
    node = ros.node("demo_source")
    pub = node.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
    proc = _start_recorder(ros.domain_id, tmp_path, "bag")
    try:
        assert wait_for(lambda: pub.get_subscription_count() == 1, 20.0), "recorder never subscribed"
        start = time.monotonic()
        published = 0
        while time.monotonic() - start < 3.0:  # 100 Hz for 3 s
            pub.publish(status(published))
            published += 1
            time.sleep(0.01)
        if sig != signal.SIGKILL:
            time.sleep(0.5)  # delivered (reliable); then the signal
        proc.send_signal(sig)
        output = proc.communicate(timeout=20)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    bag = tmp_path / "bag"
    if sig == signal.SIGKILL:
        assert not (bag / "metadata.yaml").exists()
        recover_bag(bag)
    else:
        assert proc.returncode == 0, output
        assert "closed" in output, output
    steps = [deserialize_message(d, EpisodeStatus) for _, _, _, d in read_bag(bag)]
    sequence = [m.episode_id * 20 + m.step for m in steps]
    assert sequence == list(range(len(sequence)))  # a contiguous prefix, nothing duplicated
    if sig == signal.SIGKILL:
        lost = published - len(sequence)
        lost_s = lost * 0.01
        print(f"SIGKILL: {len(sequence)} of {published} kept, {lost} lost (~{lost_s:.2f} s at 100 Hz)")
        assert lost_s <= 1.0 and len(sequence) > 100
    else:
        print(f"{sig.name}: {len(sequence)} of {published} kept")
        assert len(sequence) == published
