"""Demo bags -> demonstrations: transitions from synthetic bags written like record_demos
writes them (frames, images, executed commands, labels), and the errors that name what is
wrong. The recorded-through-the-graph case is test/test_record_demos.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hilserl_msgs.msg import Action, EpisodeStatus, Reward  # noqa: E402
from rclpy.serialization import serialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from hilserl_learner.bag_demos import BagConversion, BagDemoError, dataset_from_bags  # noqa: E402
from hilserl_policy.config import ObservationSpec  # noqa: E402
from hilserl_policy.observation import ObservationLayout  # noqa: E402
from hilserl_teleop.demo_bag import BagRecorder, message_typestore  # noqa: E402

TOPICS = {"/joint_states": "sensor_msgs/msg/JointState", "/ee_pose": "geometry_msgs/msg/PoseStamped",
          "/hilserl/task_state": "geometry_msgs/msg/PoseStamped", "/hilserl/reward": "hilserl_msgs/msg/Reward",
          "/hilserl/executed_action": "hilserl_msgs/msg/Action",
          "/hilserl/episode_status": "hilserl_msgs/msg/EpisodeStatus",
          "/camera/front/image_raw": "sensor_msgs/msg/Image"}
STATE_SPEC = ObservationSpec(state_dim=10, action_dim=3, has_gripper=True)
IMAGE_SPEC = ObservationSpec(state_dim=10, action_dim=3, has_gripper=True, camera_names=("front",), image_size=4)
PERIOD_NS = 100_000_000


def _stamped(msg, stamp: int):
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    return msg


def write_bag(path, episodes, skip=(), image_size=4, encoding="rgb8", gap_after=None, labels=True,
              success_frames=True, repeat_command=None):
    """episodes: list of (steps, end_reason). Frame k: ee at x = 0.4 + 0.01 k, cube fixed;
    command k: linear (0.1 k, 0, -1), gripper close on the last step; success on the last
    frame of END_SUCCESS episodes (``success_frames``). Topics in ``skip`` are left out;
    command ``repeat_command`` (k) is recorded twice."""
    recorder = BagRecorder(path, message_typestore(TOPICS.values()))
    for topic, msgtype in TOPICS.items():
        if topic not in skip:
            recorder.add_topic(topic, msgtype)

    def put(topic, msg, stamp):
        if topic not in skip:
            recorder.write(topic, stamp, serialize_message(msg))

    stamp, k = 1_000_000_000, 0

    def frame(success=False, timeout=False):
        nonlocal stamp
        joints = JointState(name=["j0", "right_driver_joint"], position=[0.1 * k, 0.8 if k % 2 else 0.0],
                            velocity=[0.0, 0.0])
        ee, cube = PoseStamped(), PoseStamped()
        ee.pose.position.x, ee.pose.position.z = 0.4 + 0.01 * k, 0.2
        cube.pose.position.x, cube.pose.position.y = 0.5, 0.05
        image = Image(height=image_size, width=image_size, encoding=encoding, step=3 * image_size)
        pixels = np.zeros((image_size, image_size, 3), np.uint8)
        pixels[..., 0] = k % 256  # red channel carries the frame number
        image.data = pixels.tobytes()
        reward = Reward(reward=1.0 if success else 0.0, success=success, terminated=success, truncated=timeout)
        for topic, msg in (("/joint_states", joints), ("/ee_pose", ee), ("/hilserl/task_state", cube),
                           ("/camera/front/image_raw", image), ("/hilserl/reward", reward)):
            put(topic, _stamped(msg, stamp), stamp)
        this = stamp
        stamp += PERIOD_NS * (50 if gap_after == k else 1)
        return this

    for episode, (steps, end) in enumerate(episodes):
        current = frame()
        for step in range(steps):
            command = Action(gripper=Action.GRIPPER_CLOSE if step == steps - 1 else Action.GRIPPER_OPEN,
                             source=Action.SOURCE_SCRIPTED, intervention=True)
            command.linear.x, command.linear.z = 0.1 * k, -1.0
            put("/hilserl/executed_action", _stamped(command, current), current + 1)
            if k == repeat_command:
                put("/hilserl/executed_action", _stamped(command, current), current + 1)
            k += 1
            last = step == steps - 1
            current = frame(success=last and end == EpisodeStatus.END_SUCCESS and success_frames,
                            timeout=last and end == EpisodeStatus.END_TIMEOUT)
        if labels:
            status = EpisodeStatus(episode_id=episode + 1, step=steps, end_reason=end)
            put("/hilserl/episode_status", _stamped(status, current), current + 2)
    recorder.close()
    return path


def test_transitions_follow_frames_commands_and_labels(tmp_path):
    write_bag(tmp_path / "a", [(3, EpisodeStatus.END_SUCCESS), (2, EpisodeStatus.END_TIMEOUT),
                               (4, EpisodeStatus.END_SUCCESS)])
    data, totals = dataset_from_bags([tmp_path], IMAGE_SPEC)
    assert totals == {"bags": 1, "episodes": 3, "kept": 2, "transitions": 7}
    a = data.arrays
    assert a["terminated"].tolist() == [False, False, True, False, False, False, True]
    assert not a["truncated"].any()
    assert a["gripper_action"].tolist() == [2, 2, 0, 2, 2, 2, 0]  # open, open, close
    assert a["gripper_penalty"].tolist() == pytest.approx([0, 0, -0.02, 0, 0, 0, -0.02])
    # Episode 3 starts at command k = 5 (after episode 2's two commands were dropped).
    np.testing.assert_allclose(a["action"][:, 0], [0.0, 0.1, 0.2, 0.5, 0.6, 0.7, 0.8], atol=1e-6)
    # Observation of each transition is its command's frame, the next its successor; images too.
    states, images = data.frames["state"], data.frames["front"]
    ee_x = states[a["obs_frame"], 1]
    np.testing.assert_allclose(ee_x, 0.4 + 0.01 * np.array([0, 1, 2, 5, 6, 7, 8]), atol=1e-6)
    np.testing.assert_allclose(states[a["next_frame"], 1] - ee_x, 0.01, atol=1e-6)
    assert images[a["obs_frame"], 0, 0, 0].tolist() == [0, 1, 2, 5, 6, 7, 8]
    # Gripper opening from the calibrated joint (closed at 0.8 on odd frames).
    assert states[a["obs_frame"], 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]

    everything, totals = dataset_from_bags([tmp_path / "a"], STATE_SPEC, BagConversion(keep="all"))
    assert totals["kept"] == 3 and everything.arrays["truncated"].tolist() == \
        [False, False, False, False, True, False, False, False, False]


def test_a_success_label_without_a_success_frame_ends_the_episode_at_its_last_step(tmp_path):
    # A person's success key on a robot without a reward source: the label is the success.
    write_bag(tmp_path / "a", [(3, EpisodeStatus.END_SUCCESS), (2, EpisodeStatus.END_SUCCESS)],
              success_frames=False)
    data, totals = dataset_from_bags([tmp_path], STATE_SPEC)
    assert totals["transitions"] == 5
    assert data.arrays["terminated"].tolist() == [False, False, True, False, True]
    assert data.arrays["reward"].tolist() == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_bgr_images_are_converted_to_rgb(tmp_path):
    write_bag(tmp_path / "bgr", [(2, EpisodeStatus.END_SUCCESS)], encoding="bgr8")
    data, _ = dataset_from_bags([tmp_path / "bgr"], IMAGE_SPEC)
    assert data.frames["front"][1, 0, 0].tolist() == [0, 0, 1]  # the red value lands in blue


@pytest.mark.parametrize("case, match", [
    ("missing", r"missing topics \['/hilserl/executed_action'\]"),
    ("no_camera", r"no images of camera 'front'"),
    ("size", r"image 6x6, the observation spec wants 4x4"),
    ("encoding", r"image encoding 'mono8'"),
    ("gap", r"inconsistent frame rate inside an episode: 5000 ms"),
    ("labels", r"no labelled episode"),
    ("repeated", r"episode 1 has 4 executed commands before its label, which counts 3 steps"),
    ("failed_only", r"1 episodes, none successful"),
    ("killed", r"no metadata.yaml .*recover"),
    ("empty", r"no bag in"),
])
def test_bad_bags_are_refused_naming_the_problem(tmp_path, case, match):
    ok = [(3, EpisodeStatus.END_SUCCESS)]
    spec = IMAGE_SPEC
    if case == "missing":
        write_bag(tmp_path / "b", ok, skip=("/hilserl/executed_action",))
    elif case == "no_camera":
        write_bag(tmp_path / "b", ok, skip=("/camera/front/image_raw",))
    elif case == "size":
        write_bag(tmp_path / "b", ok, image_size=6)
    elif case == "encoding":
        write_bag(tmp_path / "b", ok, encoding="mono8")
    elif case == "gap":
        write_bag(tmp_path / "b", [(6, EpisodeStatus.END_SUCCESS)], gap_after=3)
    elif case == "labels":
        write_bag(tmp_path / "b", ok, labels=False)
    elif case == "repeated":
        write_bag(tmp_path / "b", [(3, EpisodeStatus.END_SUCCESS), (2, EpisodeStatus.END_SUCCESS)], repeat_command=1)
    elif case == "failed_only":
        write_bag(tmp_path / "b", [(3, EpisodeStatus.END_FAILURE)])
    elif case == "killed":
        write_bag(tmp_path / "good", ok)
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "b.mcap").write_bytes(b"\x89MCAP0\r\n")
    elif case == "empty":
        (tmp_path / "nothing").mkdir()
    with pytest.raises(BagDemoError, match=match):
        dataset_from_bags([tmp_path / "nothing" if case == "empty" else tmp_path], spec,
                          BagConversion(max_gap_factor=10.0))


def test_layout_comes_from_the_conversion(tmp_path):
    write_bag(tmp_path / "a", [(2, EpisodeStatus.END_SUCCESS)])
    raw = ObservationLayout("raw", num_joints=1)
    spec = ObservationSpec(state_dim=raw.dim, action_dim=3, has_gripper=True)
    data, _ = dataset_from_bags([tmp_path], spec, BagConversion(layout=raw))
    assert data.frames["state"].shape == (3, raw.dim) and data.layout["name"] == "raw"
    np.testing.assert_allclose(data.frames["state"][:, 0], [0.0, 0.1, 0.2], atol=1e-6)  # joint j0
