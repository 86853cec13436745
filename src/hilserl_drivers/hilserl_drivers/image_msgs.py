"""``sensor_msgs/Image`` <-> RGB uint8 arrays, for the camera nodes and the MuJoCo bridge.

The project converts images itself: the ``cv_bridge`` on PyPI (1.13.0.post0, from ROS 1)
calls ``ndarray.tostring``, which numpy 2 removed, so it cannot convert here; a ROS 2
install's ``cv_bridge`` produces the same messages (rgb8/bgr8/mono8, packed rows).
"""

from __future__ import annotations

import array

import numpy as np
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from hilserl_drivers.driver_msgs import FRAMES

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}
IMAGE_QOS = ("sensor_data", "reliable")
IMAGE_QOS_DESCRIPTION = ("QoS of camera images: 'sensor_data' (best effort, a live camera's) or 'reliable' "
                         "(every frame delivered: a lock-step sim whose reward or recording needs each one); "
                         "publishers and subscribers of one image topic must agree")


def image_qos(kind: str) -> QoSProfile:
    """The QoS of an image topic: ``sensor_data`` (best effort, keep last 5) or ``reliable``
    (keep last 100: a writer drops what a slow reader has not acknowledged after that many
    newer frames). A reliable subscriber does not connect to a best-effort publisher."""
    if kind == "sensor_data":
        return qos_profile_sensor_data
    if kind == "reliable":
        return FRAMES
    raise ValueError(f"image_qos must be one of {IMAGE_QOS}, got {kind!r}")


def image_message(image: np.ndarray, stamp, frame_id: str) -> Image:
    """An rgb8 ``Image`` of an (H, W, 3) uint8 RGB array."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype}{image.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    # array('B') is taken by rclpy as a buffer; bytes would be copied element by element.
    msg.data = array.array("B", np.ascontiguousarray(image).tobytes())
    return msg


def image_array(msg, where: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB from an rgb8, bgr8 or mono8 ``Image`` (rows may be padded: ``step``)."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ValueError(f"{where}: encoding {msg.encoding!r} is not one of {sorted(CHANNELS)}")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1 or step < width * channels or len(msg.data) < step * height:
        raise ValueError(f"{where}: {width}x{height} {msg.encoding} needs step >= {width * channels} and "
                         f"{step * height} bytes, got step {step} and {len(msg.data)} bytes")
    rows = np.frombuffer(bytes(msg.data), np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, :width * channels].reshape(height, width, channels)
    if msg.encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    return pixels.copy()
