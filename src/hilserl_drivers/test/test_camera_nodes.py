"""Camera and preprocessing nodes over real DDS: a video file standing in for a device is
published at the configured rate, and each raw image comes out cropped and resized exactly
as ``crop_resize`` does it, with its stamp."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("cv2")

from hilserl_msgs.msg import Topics  # noqa: E402
from hilserl_testing import wait_for, write_video  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from hilserl_drivers.camera import Roi, crop_resize  # noqa: E402
from hilserl_drivers.camera_node import CameraNode  # noqa: E402
from hilserl_drivers.camera_preprocess_node import CameraPreprocessNode  # noqa: E402
from hilserl_drivers.image_msgs import image_array  # noqa: E402


def stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_camera_and_preprocessing_nodes(ros, tmp_path):
    video = tmp_path / "front.avi"
    write_video(video, frames=10)
    lock = threading.Lock()
    raw, processed = {}, {}
    probe = ros.node("camera_probe")

    def keep(store):
        def on_image(msg):
            with lock:
                store[stamp(msg)] = msg
        return on_image
    probe.create_subscription(Image, Topics.CAMERA_RAW.format(name="front"), keep(raw), qos_profile_sensor_data)
    probe.create_subscription(Image, Topics.CAMERA.format(name="front"), keep(processed), qos_profile_sensor_data)
    pre = ros.add(CameraPreprocessNode(context=ros.context, parameter_overrides=[
        Parameter("camera_names", value=["front"]), Parameter("image_size", value=16),
        Parameter("front.roi", value=[8, 4, 32, 32])]))
    cam = ros.add(CameraNode(context=ros.context, parameter_overrides=[
        Parameter("camera_names", value=["front"]), Parameter("front.source", value=str(video)),
        Parameter("rate_hz", value=20.0)]))
    assert wait_for(lambda: len(processed) >= 20, 20.0), (len(raw), len(processed))
    start_frames = cam.readers["front"].stats.frames
    time.sleep(2.0)
    rate = (cam.readers["front"].stats.frames - start_frames) / 2.0
    print(f"camera node: {rate:.1f} frames/s at rate_hz 20; preprocessed {pre.published['front']}")
    assert 15.0 <= rate <= 21.0
    with lock:
        pairs = [(raw[s], processed[s]) for s in sorted(processed) if s in raw]
    assert len(pairs) >= 15
    for r, p in pairs:
        assert (p.width, p.height, p.encoding, p.header.frame_id) == (16, 16, "rgb8", "front_camera")
        np.testing.assert_array_equal(image_array(p), crop_resize(image_array(r), Roi(8, 4, 32, 32), 16))
    assert pre.dropped["front"] == 0


def test_a_roi_outside_the_image_drops_and_counts(ros, tmp_path):
    video = tmp_path / "front.avi"
    write_video(video, frames=5)
    pre = ros.add(CameraPreprocessNode(context=ros.context, parameter_overrides=[
        Parameter("camera_names", value=["front"]), Parameter("front.roi", value=[40, 0, 40, 40])]))
    ros.add(CameraNode(context=ros.context, parameter_overrides=[
        Parameter("camera_names", value=["front"]), Parameter("front.source", value=str(video))]))
    assert wait_for(lambda: pre.dropped["front"] >= 3, 20.0)
    assert pre.published["front"] == 0
    with pytest.raises(ValueError, match="front.source is empty"):
        CameraNode(context=ros.context, parameter_overrides=[Parameter("camera_names", value=["front"])])
