"""Demo bags (``record_demos``) -> a ``DemoDataset`` for the demo buffer. ROS-free.

A bag holds, per step, one *frame* (``joint_states``, ``ee_pose``, ``hilserl/task_state``,
``hilserl/reward`` and each camera's image, all with the frame's header stamp), the executed
action for that frame (``hilserl/executed_action``: the mux's, same stamp; the safety
limiter's clamp belongs to the environment) and the episode labels
(``hilserl/episode_status``). A transition is what the actor would have streamed: the
frame a command was executed on, the command, and the next frame (its reward, success,
the environment's terminated/truncated flags); the gripper penalty comes from the actor's own
``EpisodeTracker``, and an episode labelled ``END_TIMEOUT`` is truncated at its last step.

Episodes: commands in stamp order are split by the labels, in order: an episode ended
by ``END_SUCCESS`` / ``END_FAILURE`` / ``END_TIMEOUT`` / ``END_ABORTED`` with ``step = n``
owns the commands stamped before its label (header stamps: frames and labels are stamped
by the system clock of one machine), and there must be n of them. Only successful episodes
are kept by default; a successful one ends at its first success frame, or, where no frame
says success (a person's label on a robot without a reward source), at its last step,
rewarded ``SUCCESS_REWARD``.

Checked, with a ``BagDemoError`` naming the bag and the problem: missing topics, image
encodings and sizes, a command without its frame or next frame, frames whose intervals
are inconsistent (a gap longer than ``max_gap_factor`` times the median: a recording that
lost messages), labels that do not add up to the commands, an episode whose label counts
other than its commands, and no labelled episode.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np

from hilserl_learner.demo_file import DemoDataset, DemoDatasetBuilder
from hilserl_policy.actor_core import EpisodeTracker
from hilserl_policy.config import ObservationSpec
from hilserl_policy.encoders import STATE_KEY
from hilserl_policy.networks import gripper_command_to_index
from hilserl_policy.observation import GripperCalibration, ObservationLayout, state_from_messages

FRAME_TOPICS = {"joints": "/joint_states", "ee": "/ee_pose", "task": "/hilserl/task_state",
                "reward": "/hilserl/reward"}
COMMAND_TOPIC = "/hilserl/executed_action"
STATUS_TOPIC = "/hilserl/episode_status"
CAMERA_TOPICS = ("/camera/{name}/image", "/camera/{name}/image_raw")  # preprocessed first
END_RUNNING, END_SUCCESS, END_TIMEOUT = 0, 1, 3  # hilserl_msgs/EpisodeStatus
SUCCESS_REWARD = 1.0  # the sparse task reward of a success frame
IMAGE_ENCODINGS = ("rgb8", "bgr8")


class BagDemoError(ValueError):
    """A demo bag cannot become demonstrations; the message names the bag and the problem."""


@dataclasses.dataclass(frozen=True)
class BagConversion:
    """How bag messages become the learner's observations and transitions."""

    layout: ObservationLayout = ObservationLayout()
    gripper: GripperCalibration = GripperCalibration()
    gripper_penalty: float = -0.02  # RLPDConfig.gripper_penalty
    keep: str = "success"  # "success": successful episodes only; "all": every labelled episode
    # A frame interval over this many median intervals inside an episode fails (0: off, the default:
    # a lock-step recording's intervals follow the machine's speed, not lost messages; set it for
    # realtime recordings).
    max_gap_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.keep not in ("success", "all"):
            raise ValueError(f"BagConversion.keep must be 'success' or 'all', got {self.keep!r}")


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _image(msg, size: int, where: str) -> np.ndarray:
    if msg.encoding not in IMAGE_ENCODINGS:
        raise BagDemoError(f"{where}: image encoding {msg.encoding!r}, expected one of {IMAGE_ENCODINGS}")
    if (msg.height, msg.width) != (size, size):
        raise BagDemoError(f"{where}: image {msg.width}x{msg.height}, the observation spec wants "
                           f"{size}x{size} (preprocess the camera, or set image_size)")
    if msg.step != 3 * msg.width or len(msg.data) != 3 * msg.width * msg.height:
        raise BagDemoError(f"{where}: image data is {len(msg.data)} bytes with step {msg.step}, "
                           f"expected {3 * msg.width * msg.height} with step {3 * msg.width}")
    image = np.frombuffer(bytes(msg.data), np.uint8).reshape(size, size, 3)
    return image[..., ::-1].copy() if msg.encoding == "bgr8" else image.copy()


def _read(path: Path, spec: ObservationSpec, state_parts: bool = True
          ) -> tuple[dict[str, dict[int, object]], list, list]:
    """(frame parts by name and stamp, commands in stamp order, labels in arrival order);
    ``state_parts=False``: only the reward and the images of each frame are needed."""
    from hilserl_teleop.demo_bag import BagError, bag_topics, deserialize, message_typestore, read_bag

    cameras = {}
    try:
        listed = {topic for topic, _ in bag_topics(path)}
    except BagError as error:
        raise BagDemoError(str(error)) from error
    for name in spec.camera_names:
        topic = next((t.format(name=name) for t in CAMERA_TOPICS if t.format(name=name) in listed), None)
        if topic is None:
            raise BagDemoError(f"{path}: no images of camera {name!r} ({' or '.join(t.format(name=name) for t in CAMERA_TOPICS)})")
        cameras[topic] = name
    frame_topics = FRAME_TOPICS if state_parts else {"reward": FRAME_TOPICS["reward"]}
    needed = set(frame_topics.values()) | {COMMAND_TOPIC, STATUS_TOPIC}
    missing = sorted(needed - listed)
    if missing:
        raise BagDemoError(f"{path}: missing topics {missing} (record_demos records them)")
    parts: dict[str, dict[int, object]] = defaultdict(dict)
    commands, labels = [], []
    part_of = {topic: part for part, topic in frame_topics.items()}
    store = message_typestore(["hilserl_msgs/msg/Action", "hilserl_msgs/msg/EpisodeStatus",
                               "hilserl_msgs/msg/Reward"])
    for topic, msgtype, _, data in read_bag(path, needed | set(cameras)):
        try:
            msg = deserialize(store, data, msgtype)
        except BagError as error:
            raise BagDemoError(f"{path} {topic}: {error}") from error
        if topic in part_of:
            parts[part_of[topic]][_stamp(msg)] = msg
        elif topic in cameras:
            parts[cameras[topic]][_stamp(msg)] = _image(msg, spec.image_size, f"{path} {topic}")
        elif topic == COMMAND_TOPIC:
            commands.append(msg)
        elif msg.end_reason != END_RUNNING and not msg.evaluation:
            labels.append(msg)
    commands.sort(key=_stamp)
    return parts, commands, labels


def find_bags(paths) -> list[Path]:
    """The complete bags of ``paths`` (bag folders, or folders of bag folders)."""
    from hilserl_teleop.demo_bag import BagError, find_bags as find

    try:
        return find(paths)
    except BagError as error:
        raise BagDemoError(str(error)) from error


def _check_gaps(path: Path, stamps: list[int], factor: float) -> None:
    gaps = np.diff(np.asarray(stamps, np.int64))
    if factor <= 0 or len(gaps) < 3:
        return
    median = float(np.median(gaps))
    worst = int(np.argmax(gaps))
    if median > 0 and gaps[worst] > factor * median:
        raise BagDemoError(f"{path}: inconsistent frame rate inside an episode: {gaps[worst] / 1e6:.0f} ms "
                           f"between two frames, median {median / 1e6:.1f} ms (lost messages?)")


@dataclasses.dataclass
class BagEpisode:
    """One labelled episode of a bag: its frame stamps (the first observation, then each step's
    next frame), its executed actions in order, and its label."""

    frames: list[int]
    actions: list
    end_reason: int
    episode_id: int = -1

    @property
    def success(self) -> bool:
        return self.end_reason == END_SUCCESS


def read_episodes(path: str | Path, spec: ObservationSpec, max_gap_factor: float = 0.0,
                  state_parts: bool = True) -> tuple[dict[str, dict[int, object]], list[BagEpisode]]:
    """Frame parts by name and stamp, and the bag's labelled episodes (checked, see module doc).
    ``state_parts=False``: frames need only the reward and the spec's images (the classifier)."""
    path = Path(path)
    parts, commands, labels = _read(path, spec, state_parts)
    if not labels:
        raise BagDemoError(f"{path}: no labelled episode (no EpisodeStatus with an end reason)")
    frame_keys = (list(FRAME_TOPICS) if state_parts else ["reward"]) + list(spec.camera_names)
    complete = sorted(s for s in parts["reward"] if all(s in parts[k] for k in frame_keys))
    if sum(int(label.step) for label in labels) > len(commands):
        raise BagDemoError(f"{path}: the labels count {sum(int(x.step) for x in labels)} steps, the bag has "
                           f"{len(commands)} executed commands (unlabelled or lost steps)")
    index = {stamp: i for i, stamp in enumerate(complete)}
    episodes, cursor = [], 0
    for label in labels:
        # An episode's commands are those stamped before its label (the label follows the last
        # step's result; the next episode's frames come after its reset): the count must agree.
        end = cursor
        while end < len(commands) and _stamp(commands[end]) < _stamp(label):
            end += 1
        if end - cursor != int(label.step):
            raise BagDemoError(f"{path}: episode {label.episode_id} has {end - cursor} executed commands before "
                               f"its label, which counts {label.step} steps (lost or repeated commands)")
        actions = commands[cursor:end]
        cursor = end
        frames: list[int] = []
        for action in actions:
            stamp = _stamp(action)
            if stamp not in index or index[stamp] + 1 >= len(complete):
                raise BagDemoError(f"{path}: the action stamped {stamp} has no complete frame "
                                   "and next frame (lost messages?)")
            frames += [stamp, complete[index[stamp] + 1]] if not frames else [complete[index[stamp] + 1]]
        _check_gaps(path, frames, max_gap_factor)
        episodes.append(BagEpisode(frames, actions, int(label.end_reason), int(label.episode_id)))
    return parts, episodes


def add_bag(builder: DemoDatasetBuilder, path: str | Path, conversion: BagConversion) -> dict[str, int]:
    """Convert one bag into ``builder``; returns counts (episodes, kept, transitions)."""
    spec = builder.spec
    parts, episodes = read_episodes(path, spec, conversion.max_gap_factor)

    def observation(stamp: int) -> dict[str, np.ndarray]:
        obs = {STATE_KEY: state_from_messages(conversion.layout, conversion.gripper, parts["joints"][stamp],
                                              parts["ee"][stamp], parts["task"][stamp])}
        obs.update({name: parts[name][stamp] for name in spec.camera_names})
        return obs

    counts = {"episodes": len(episodes), "kept": 0, "transitions": 0}
    for episode in episodes:
        if conversion.keep == "success" and not episode.success:
            continue
        limit = len(episode.actions) if episode.end_reason == END_TIMEOUT else 2 ** 62
        tracker = EpisodeTracker(max_steps=limit, gripper_penalty=conversion.gripper_penalty)
        for step, action_msg in enumerate(episode.actions):
            stamp, next_stamp = episode.frames[step], episode.frames[step + 1]
            reward = parts["reward"][next_stamp]
            # A success label on an episode whose frames never say success (a person's key on a
            # robot without a reward source): its last step is the success, with the task's reward.
            labelled = episode.success and step == len(episode.actions) - 1
            value = max(float(reward.reward), SUCCESS_REWARD) if labelled else float(reward.reward)
            terminated, truncated, penalty = tracker.record(
                value, reward.success or labelled, int(action_msg.gripper), bool(action_msg.intervention),
                env_terminated=reward.terminated, env_truncated=reward.truncated)
            action = np.array([action_msg.linear.x, action_msg.linear.y, action_msg.linear.z,
                               action_msg.angular.x, action_msg.angular.y, action_msg.angular.z],
                              np.float32)[:spec.action_dim]
            builder.add(observation(stamp), action, gripper_command_to_index(int(action_msg.gripper)),
                        value, observation(next_stamp), terminated, truncated, penalty)
            counts["transitions"] += 1
            if terminated:
                break  # frames recorded after the success (record_after_success) are not transitions
        if episode.actions:
            builder.end_episode(episode.success)
            counts["kept"] += 1
    return counts


def dataset_from_bags(paths, spec: ObservationSpec, conversion: BagConversion = BagConversion(),
                      source: str = "") -> tuple[DemoDataset, dict[str, int]]:
    """Every bag of ``paths`` (bag folders, or folders of bag folders) as one dataset."""
    bags = find_bags(paths)
    layout = dataclasses.asdict(conversion.layout)
    builder = DemoDatasetBuilder(spec, layout, source or f"bags: {', '.join(b.name for b in bags)}")
    totals = {"bags": len(bags), "episodes": 0, "kept": 0, "transitions": 0}
    for bag in bags:
        for key, value in add_bag(builder, bag, conversion).items():
            totals[key] += value
    if totals["kept"] == 0:
        raise BagDemoError(f"{[str(b) for b in bags]}: {totals['episodes']} episodes, none "
                           f"{'successful' if conversion.keep == 'success' else 'with steps'}")
    return builder.build(), totals


def main(argv=None) -> int:
    import argparse
    import sys

    from hilserl_learner.demo_file import write_demo_file

    parser = argparse.ArgumentParser(description="Demo bags -> a demo file the learner loads (demo_file).")
    parser.add_argument("bags", nargs="+", help="bag folders, or folders of bag folders")
    parser.add_argument("--out", required=True, help="demo file to write (.safetensors)")
    parser.add_argument("--layout", default="relative", help="observation layout (the learner's)")
    parser.add_argument("--num-joints", type=int, default=7)
    parser.add_argument("--dynamics", action="store_true",
                        help="append joint velocities and efforts (the learner's observation_dynamics)")
    parser.add_argument("--cameras", default="", help="comma-separated camera names to include")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--keep", choices=("success", "all"), default="success")
    args = parser.parse_args(argv)
    layout = ObservationLayout(args.layout, num_joints=args.num_joints, dynamics=args.dynamics)
    spec = ObservationSpec(state_dim=layout.dim, action_dim=3, has_gripper=True,
                           camera_names=tuple(c for c in args.cameras.split(",") if c),
                           image_size=args.image_size)
    try:
        data, totals = dataset_from_bags(args.bags, spec, BagConversion(
            layout=layout, keep=args.keep))
    except (BagDemoError, ValueError) as error:
        print(f"bag_demos: {error}", file=sys.stderr)
        return 2
    write_demo_file(args.out, data)
    print(f"{args.out}: {totals['kept']} of {totals['episodes']} episodes from {totals['bags']} bag(s), "
          f"{totals['transitions']} transitions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
