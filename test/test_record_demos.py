"""The record_demos composition end to end: the scripted expert drives the sim arm through mux
and limiter, the actor labels episodes, the recorder's bag holds every frame, image, executed
command and label, consistent with one another, and converts to exactly the in-process demos."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")

from hilserl_testing import run_composition  # noqa: E402
from hilserl_msgs.msg import Action, EpisodeStatus, Reward  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from hilserl_learner.bag_demos import dataset_from_bags  # noqa: E402
from hilserl_learner.record_expert_demos import collect_expert_demos  # noqa: E402
from hilserl_learner.train_reward_classifier import labelled_frames  # noqa: E402
from hilserl_learner.train_reward_classifier import main as train_main  # noqa: E402
from hilserl_policy.config import ObservationSpec  # noqa: E402
from hilserl_teleop.demo_bag import read_bag  # noqa: E402


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_record_demos_writes_labelled_episodes_to_a_bag(ros_domain_id, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"actor": {"ros__parameters": {"report_period_s": 1.0}}}))
    out = run_composition(ros_domain_id, params, "record_demos", "demos:=3", "bag:=demos",
                          f"output_dir:={tmp_path}", timeout=240.0)
    assert out.find(r"done: 3 successful demonstrations recorded")
    assert out.find(r"bag .*demos closed")

    by_topic: dict[str, list] = defaultdict(list)
    kinds = {"/joint_states": JointState, "/hilserl/reward": Reward, "/hilserl/executed_action": Action,
             "/hilserl/episode_status": EpisodeStatus, "/camera/front/image_raw": Image,
             "/camera/wrist/image_raw": Image}
    for topic, _, _, data in read_bag(Path(tmp_path) / "demos"):
        if topic in kinds:
            by_topic[topic].append(deserialize_message(data, kinds[topic]))
    labels = [m for m in by_topic["/hilserl/episode_status"] if m.end_reason != EpisodeStatus.END_RUNNING]
    assert [m.end_reason for m in labels].count(EpisodeStatus.END_SUCCESS) == 3
    assert labels[-1].end_reason == EpisodeStatus.END_SUCCESS and not any(m.evaluation for m in labels)

    frames = [stamp(m) for m in by_topic["/hilserl/reward"]]
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert [stamp(m) for m in by_topic["/joint_states"]] == frames  # one of each part per frame
    # Every frame from the first episode on has both images (the bridge's start-up frame may
    # come before the recorder's best-effort image subscriptions are matched).
    first = min(stamp(m) for m in by_topic["/hilserl/executed_action"])
    for camera in ("front", "wrist"):
        images = by_topic[f"/camera/{camera}/image_raw"]
        assert [stamp(m) for m in images if stamp(m) >= first] == [f for f in frames if f >= first], camera
        assert all((m.height, m.width, m.encoding) == (128, 128, "rgb8") for m in images)
    # Every executed command answers a frame, and all came from the (simulated) human.
    commands = by_topic["/hilserl/executed_action"]
    assert set(stamp(m) for m in commands) <= set(frames)
    assert all(m.intervention and m.source == Action.SOURCE_SCRIPTED for m in commands)
    # Steps per episode: the labels' step counts add up to the commands executed.
    assert sum(m.step for m in labels) == len(commands)
    successes = [m for m in by_topic["/hilserl/reward"] if m.success]
    assert len(successes) == 3

    # The bag becomes exactly the demonstrations that the in-process env gives for the same
    # episode seeds (record_demos.yaml: seed 500000 + episode): frames, actions, gripper
    # indices, rewards, penalties, terminations.
    spec = ObservationSpec(state_dim=10, action_dim=3, has_gripper=True)
    from_bag, totals = dataset_from_bags([tmp_path], spec)
    in_process = collect_expert_demos(3, seed=500_000)
    # (an episode aborted at its start, a command lost while the graph was still connecting,
    # is counted but holds nothing, and its seed is retried)
    assert totals["kept"] == 3 and totals["transitions"] == len(in_process)
    np.testing.assert_allclose(from_bag.frames["state"], in_process.frames["state"], atol=1e-6)
    for key, values in in_process.arrays.items():
        np.testing.assert_allclose(from_bag.arrays[key], values, atol=1e-6, err_msg=key)


def test_record_after_success_gives_the_classifier_its_success_frames(ros_domain_id, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"actor": {"ros__parameters": {"record_after_success": 5}}}))
    run_composition(ros_domain_id, params, "record_demos", "demos:=2", "bag:=demos", f"output_dir:={tmp_path}",
                    timeout=240.0)
    rewards = [deserialize_message(d, Reward) for t, _, _, d in read_bag(tmp_path / "demos")
               if t == "/hilserl/reward"]
    successes = sum(m.success for m in rewards)
    assert successes >= 2 * 3  # the expert keeps the cube up after its first success frame
    # Frames after a success are recorded, but the demonstrations end at the success.
    data, totals = dataset_from_bags([tmp_path], ObservationSpec(state_dim=10, action_dim=3, has_gripper=True))
    assert totals["kept"] == 2 and data.arrays["terminated"].sum() == 2
    assert data.arrays["terminated"][-1] and not data.arrays["truncated"].any()

    # The bag trains the reward classifier: every frame, labelled by the ground truth.
    images, labels, episodes = labelled_frames([tmp_path], ("front", "wrist"), 128)
    # (the bridge's start-up frame belongs to no episode)
    assert len(rewards) - 2 <= len(labels) < len(rewards) and int(labels.sum()) == successes
    assert sorted(set(episodes.tolist())) == [0, 1] and images["front"].shape[1:] == (128, 128, 3)
    # (two episodes: one trains, one is held out; too few to also validate)
    assert train_main([str(tmp_path), "--cameras", "front,wrist", "--out", str(tmp_path / "few"),
                       "--steps", "10", "--batch-size", "8"]) == 2
    assert train_main([str(tmp_path), "--cameras", "front,wrist", "--out", str(tmp_path / "clf"),
                       "--steps", "10", "--batch-size", "8", "--validation", "0"]) == 0
    metrics = json.loads((tmp_path / "clf" / "classifier.json").read_text())["metrics"]
    assert metrics["frames"]["held_out"] + metrics["frames"]["train"] == len(labels)
    assert metrics["frames"]["validation"] == 0
    assert set(metrics["held_out"]) == {"accuracy", "false_positive_rate", "false_negative_rate"}
