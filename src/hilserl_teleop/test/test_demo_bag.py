"""Demo bags: round trip read back by rosbags and by the independent `mcap` reader, the
type hashes ROS computes, what a SIGKILL loses, recovery, and the errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from hilserl_msgs.msg import EpisodeStatus
from hilserl_teleop.demo_bag import (
    BagError,
    BagRecorder,
    deserialize,
    message_typestore,
    read_bag,
    recover_bag,
)

TYPES = {"/camera/front/image": "sensor_msgs/msg/Image",
         "/hilserl/episode_status": "hilserl_msgs/msg/EpisodeStatus"}


def image(i: int) -> Image:
    msg = Image(height=4, width=5, encoding="rgb8", step=15)
    msg.header.stamp.sec, msg.header.frame_id = i, "front"
    msg.data = np.full(60, i % 256, np.uint8).tobytes()
    return msg


def status(i: int) -> EpisodeStatus:
    return EpisodeStatus(actor_id="demo", episode_id=i // 10, step=i % 10,
                         end_reason=EpisodeStatus.END_SUCCESS if i % 10 == 9 else EpisodeStatus.END_RUNNING)


def test_round_trip_keeps_every_message_its_order_and_timestamps(tmp_path):
    store = message_typestore(TYPES.values())
    bag = tmp_path / "demo_0"
    recorder = BagRecorder(bag, store)
    for topic, msgtype in TYPES.items():
        recorder.add_topic(topic, msgtype)
    written = []
    for i in range(200):
        topic = "/camera/front/image" if i % 2 == 0 else "/hilserl/episode_status"
        data = serialize_message(image(i) if i % 2 == 0 else status(i))
        stamp = 1_000_000_000 + 1_000_000 * i
        recorder.write(topic, stamp, data)
        written.append((topic, stamp, data))
    recorder.close()
    assert (bag / "metadata.yaml").is_file() and recorder.message_count == 200

    # rosbags (what the learner loads) ...
    read = [(t, s, d) for t, _, s, d in read_bag(bag)]
    assert read == written
    # ... and an independent MCAP reader, which also checks the schemas.
    with open(recorder.mcap_path, "rb") as handle:
        reader = make_reader(handle)
        other = [(c.topic, m.log_time, m.data) for _, c, m in reader.iter_messages(log_time_order=True)]
        schemas = {c.topic: s.name for s, c, _ in reader.iter_messages()}
    assert other == written
    assert schemas == {t: m for t, m in TYPES.items()}
    back = deserialize_message(written[0][2], Image)
    assert back.encoding == "rgb8" and bytes(back.data) == bytes(60)
    assert deserialize_message(written[19][2], EpisodeStatus).end_reason == EpisodeStatus.END_SUCCESS


def test_type_hashes_match_what_ros_generated():
    store = message_typestore(["hilserl_msgs/msg/Transition"])  # nested: Observation, NamedImage
    prefix = next(p for p in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep)
                  if (Path(p) / "share/hilserl_msgs/msg/Transition.json").is_file())
    generated = json.loads((Path(prefix) / "share/hilserl_msgs/msg/Transition.json").read_text())
    for entry in generated["type_hashes"]:
        assert store.hash_rihs01(entry["type_name"]) == entry["hash_string"], entry["type_name"]


WRITER = """
import sys, time
from hilserl_teleop.demo_bag import BagRecorder, message_typestore
recorder = BagRecorder(sys.argv[1], message_typestore(), flush_period_s=0.5)
recorder.add_topic("/chatter", "std_msgs/msg/String")
from rclpy.serialization import serialize_message
from std_msgs.msg import String
i = 0
while True:
    now = time.time_ns()
    recorder.write("/chatter", now, serialize_message(String(data=str(i))))
    if i == 0:
        print("started", flush=True)
    i += 1
    time.sleep(0.002)
"""


def test_sigkill_loses_at_most_the_last_flush_period_and_the_bag_recovers(tmp_path):
    bag = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(bag)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(2.5)
    killed_at = time.time_ns()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with pytest.raises(BagError, match="no metadata.yaml"):
        next(read_bag(bag))
    counts = recover_bag(bag)
    stamps = [s for _, _, s, _ in read_bag(bag)]
    values = [int(deserialize_message(d, __import__("std_msgs.msg").msg.String).data)
              for _, _, _, d in read_bag(bag)]
    assert counts == {"/chatter": len(stamps)} and values == list(range(len(values)))  # a prefix
    lost_s = (killed_at - stamps[-1]) / 1e9
    print(f"SIGKILL after 2.5 s: {len(stamps)} messages recovered, the last {lost_s:.2f} s lost")
    assert len(stamps) > 500 and lost_s <= 1.0
    assert (tmp_path / "killed.damaged").is_dir()
    with open(next(bag.glob("*.mcap")), "rb") as handle:
        assert sum(1 for _ in make_reader(handle).iter_messages()) == len(stamps)


def test_deserialize_takes_rclpy_padding_and_refuses_garbage():
    from sensor_msgs.msg import JointState

    store = message_typestore()
    data = serialize_message(JointState(name=["a"], position=[0.1], velocity=[0.0]))  # empty effort
    msg = deserialize(store, data, "sensor_msgs/msg/JointState")  # rosbags' own check refuses it
    assert list(msg.name) == ["a"] and msg.position.tolist() == [0.1] and msg.effort.size == 0
    with pytest.raises(BagError, match="bytes left after the message"):
        deserialize(store, data + bytes(16), "sensor_msgs/msg/JointState")
    with pytest.raises(BagError, match="not a CDR message"):
        deserialize(store, b"\x07\x07", "sensor_msgs/msg/JointState")


def test_errors_name_the_problem(tmp_path):
    store = message_typestore()
    with pytest.raises(BagError, match="no share/nope_msgs/msg/Thing.msg"):
        message_typestore(["nope_msgs/msg/Thing"])
    recorder = BagRecorder(tmp_path / "a", store)
    with pytest.raises(BagError, match="exists already"):
        BagRecorder(tmp_path / "a", store)
    with pytest.raises(BagError, match="not in the type store"):
        recorder.add_topic("/x", "hilserl_msgs/msg/EpisodeStatus")
    with pytest.raises(BagError, match="/y was not added"):
        recorder.write("/y", 1, b"")
    recorder.close()
    with pytest.raises(BagError, match="nothing to recover"):
        recover_bag(tmp_path / "a")
    with pytest.raises(ValueError, match="flush_period_s"):
        BagRecorder(tmp_path / "b", store, flush_period_s=0)
