"""Reward classifier node: preprocessed camera images -> ``hilserl/reward`` (source CLASSIFIER).

Loads a classifier saved by ``python -m hilserl_learner.train_reward_classifier`` (safetensors
+ JSON). For every stamp at which an image of each of its cameras has arrived
(``camera/<name>/image``), it publishes a ``Reward`` with that stamp: the success probability,
``success`` by the hold rule (``hold_frames`` consecutive frames at or above ``threshold``;
reset when an episode starts), ``reward`` 1 on success, ``terminated`` on success. It stands in
for the simulator's ground truth: in the train composition with ``reward:=classifier`` the
bridge's own reward goes to ``hilserl/reward_ground_truth`` (kept for comparison) and this
node's reaches the actor.
"""

from __future__ import annotations

import collections

from hilserl_msgs.msg import EpisodeStatus, Reward, Topics
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from hilserl_drivers.image_msgs import IMAGE_QOS, IMAGE_QOS_DESCRIPTION, image_array, image_qos
from hilserl_drivers.node_main import declare_parameters, run_node
from hilserl_policy.reward_classifier import SuccessHold, load_classifier

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
KEPT_STAMPS = 16

PARAMETERS = {
    "classifier_dir": ("", ParameterDescriptor(
        description="folder with classifier.safetensors and classifier.json (required)", read_only=True)),
    "threshold": (0.0, ParameterDescriptor(
        description="decision threshold on the success probability (0: the one saved with the classifier)",
        read_only=True, floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1.0)])),
    "hold_frames": (0, ParameterDescriptor(
        description="consecutive frames above the threshold before success (0: the saved value)",
        read_only=True, integer_range=[IntegerRange(from_value=0, to_value=1000)])),
    "image_qos": ("sensor_data", ParameterDescriptor(
        description=IMAGE_QOS_DESCRIPTION, read_only=True, additional_constraints="one of " + ", ".join(IMAGE_QOS))),
}


class RewardClassifierNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("reward_classifier", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        if not p["classifier_dir"]:
            raise ValueError("parameter classifier_dir is empty: train one with "
                             "python -m hilserl_learner.train_reward_classifier")
        self.model, metrics = load_classifier(p["classifier_dir"])
        config = self.model.config
        self.threshold = p["threshold"] or config.threshold
        self.hold = SuccessHold(self.threshold, p["hold_frames"] or config.hold_frames)
        self.size = config.image_size
        self.cameras = config.camera_names
        self._pending: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._episode = None
        self.published = 0
        self.dropped = 0
        self._reward_pub = self.create_publisher(Reward, Topics.REWARD, RELIABLE)
        for camera in self.cameras:
            self.create_subscription(Image, Topics.CAMERA.format(name=camera),
                                     lambda msg, c=camera: self._on_image(c, msg), image_qos(p["image_qos"]))
        self.create_subscription(EpisodeStatus, Topics.EPISODE_STATUS, self._on_episode_status, RELIABLE)
        self.get_logger().info(f"reward classifier {p['classifier_dir']}: cameras {list(self.cameras)}, "
                               f"threshold {self.threshold:.3f}, hold {self.hold.hold_frames} frames"
                               + (f", held-out {metrics.get('held_out')}" if metrics.get("held_out") else ""))

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        if (msg.episode_id, msg.actor_id) != self._episode:  # a new episode: start counting again
            self._episode = (msg.episode_id, msg.actor_id)
            self.hold.reset()

    def _on_image(self, camera: str, msg: Image) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        try:
            image = image_array(msg, f"camera {camera}")
            if image.shape[:2] != (self.size, self.size):
                raise ValueError(f"camera {camera}: {image.shape[1]}x{image.shape[0]} image, the classifier "
                                 f"takes {self.size}x{self.size} (run camera_preprocess)")
        except ValueError as error:
            self.dropped += 1
            self.get_logger().error(f"image dropped: {error}", throttle_duration_sec=5.0)
            return
        parts = self._pending.setdefault(stamp, {"header": msg.header})
        parts[camera] = image
        while len(self._pending) > KEPT_STAMPS:
            self._pending.popitem(last=False)
            self.dropped += 1
        if all(c in parts for c in self.cameras):
            del self._pending[stamp]
            self._publish(parts)

    def _publish(self, parts: dict) -> None:
        probability = float(self.model.probability({c: parts[c] for c in self.cameras}))
        success = self.hold.update(probability)
        msg = Reward(reward=1.0 if success else 0.0, success_probability=probability, success=success,
                     source=Reward.SOURCE_CLASSIFIER, terminated=success, truncated=False)
        msg.header = parts["header"]
        self._reward_pub.publish(msg)
        self.published += 1


def main(args=None) -> None:
    run_node(RewardClassifierNode, args=args)


if __name__ == "__main__":
    main()
