"""Reward classifier node over real DDS: one Reward per stamp at which every camera's image is
in, with that stamp, the model's probability, success by the hold rule (reset by a new
episode), source CLASSIFIER; a wrongly sized image is dropped and counted."""

from __future__ import annotations

import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from hilserl_msgs.msg import EpisodeStatus, Reward, Topics  # noqa: E402
from hilserl_testing import wait_for  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from hilserl_testing import CLASSIFIER_IMAGE_SIZE as SIZE  # noqa: E402
from hilserl_testing import classifier_test_config as small_config  # noqa: E402
from hilserl_testing import separable_frames as synthetic  # noqa: E402

from hilserl_drivers.image_msgs import image_message  # noqa: E402
from hilserl_policy.reward_classifier import RewardClassifier, save_classifier, train_classifier  # noqa: E402
from hilserl_policy.reward_classifier_node import RewardClassifierNode  # noqa: E402

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def test_rewards_follow_the_classifier_and_the_hold_rule(ros, tmp_path):
    images, labels = synthetic(400, seed=1)
    model = RewardClassifier(small_config(threshold=0.5, hold_frames=2))
    train_classifier(model, images, labels, steps=150, batch_size=32, lr=1e-3, seed=0)
    save_classifier(tmp_path / "clf", model)
    test_images, test_labels = synthetic(40, seed=3)
    probs = model.probability(test_images)

    node = ros.add(RewardClassifierNode(context=ros.context, parameter_overrides=[
        Parameter("classifier_dir", value=str(tmp_path / "clf"))]))
    probe = ros.node("reward_probe")
    lock = threading.Lock()
    rewards: list[Reward] = []
    probe.create_subscription(Reward, Topics.REWARD, lambda m: (lock.acquire(), rewards.append(m), lock.release()),
                              RELIABLE)
    pubs = {c: probe.create_publisher(Image, Topics.CAMERA.format(name=c), qos_profile_sensor_data)
            for c in ("front", "wrist")}
    status = probe.create_publisher(EpisodeStatus, Topics.EPISODE_STATUS, RELIABLE)
    assert wait_for(lambda: all(p.get_subscription_count() for p in pubs.values())
                    and status.get_subscription_count(), 10.0)
    order = np.argsort(~test_labels, kind="stable")  # the successes first, then the failures
    for k, i in enumerate(order):
        if k == 3:  # a new episode after three frames: the hold starts again
            status.publish(EpisodeStatus(actor_id="a", episode_id=2))
            assert wait_for(lambda: node._episode == (2, "a"), 5.0)
        stamp = Time(sec=100 + k)
        pubs["wrist"].publish(image_message(test_images["wrist"][i], stamp, "wrist"))
        pubs["front"].publish(image_message(test_images["front"][i], stamp, "front"))
        assert wait_for(lambda: len(rewards) == k + 1, 5.0), f"no reward for frame {k}"
    pubs["front"].publish(image_message(np.zeros((SIZE + 2, SIZE, 3), np.uint8), Time(sec=999), "front"))
    assert wait_for(lambda: node.dropped == 1, 5.0)

    assert [m.header.stamp.sec for m in rewards] == [100 + k for k in range(len(order))]
    assert all(m.source == Reward.SOURCE_CLASSIFIER for m in rewards)
    np.testing.assert_allclose([m.success_probability for m in rewards], probs[order], atol=1e-5)
    above = probs[order] >= 0.5
    expected, run = [], 0
    for k, a in enumerate(above):
        run = 0 if k == 3 else run
        run = run + 1 if a else 0
        expected.append(run >= 2)
    assert [m.success for m in rewards] == expected and [m.terminated for m in rewards] == expected
    assert [m.reward for m in rewards] == [1.0 if e else 0.0 for e in expected]
    assert sum(expected) >= 3  # the successes are seen (after the hold)
