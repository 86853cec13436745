"""Camera node: named OpenCV sources -> ``camera/<name>/image_raw`` (rgb8) at a fixed rate.

Parameters: ``camera_names`` and, per camera, ``<name>.source`` (a device index such as
"0", a device path, a video file standing in for a device, or a stream URL) and
``<name>.frame_id``. Every ``1 / rate_hz`` the node reads one frame from each camera and
publishes it with the sensor-data QoS. A camera whose read fails is reopened every
``reconnect_period_s`` (``CameraReader``); each tick without a frame counts as a dropped
frame, and the progress line every ``report_period_s`` names the camera, its frames,
drops and reconnects.
"""

from __future__ import annotations

import time

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from hilserl_drivers.camera import CameraReader
from hilserl_drivers.image_msgs import image_message
from hilserl_drivers.node_main import declare_parameters, run_node
from hilserl_msgs.msg import Topics


def _fixed(description: str, **kw) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=True, **kw)


def _range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high)]


PARAMETERS = {
    "camera_names": (["front"], _fixed("cameras to publish; each needs <name>.source")),
    "rate_hz": (30.0, _fixed("frames per second per camera", floating_point_range=_range(0.1, 1000.0))),
    "reconnect_period_s": (1.0, _fixed("seconds between reopen attempts of a failed camera",
                                       floating_point_range=_range(0.01, 60.0))),
    "loop_file": (True, _fixed("a video file that ends starts over (a recording standing in for a device)")),
    "report_period_s": (10.0, _fixed("seconds between progress lines", floating_point_range=_range(0.5, 3600.0))),
}


class CameraNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera", **kwargs)
        p = declare_parameters(self, PARAMETERS)
        names = [n for n in p["camera_names"] if n]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"camera_names must name distinct cameras, got {p['camera_names']}")
        self.readers: dict[str, CameraReader] = {}
        self.dropped: dict[str, int] = {}
        self._image_pubs = {}
        self._frame_ids = {}
        for name in names:
            source = self.declare_parameter(f"{name}.source", "", _fixed(
                f"camera {name}: device index, device path, video file or URL")).value
            self._frame_ids[name] = self.declare_parameter(
                f"{name}.frame_id", f"{name}_camera", _fixed(f"camera {name}: frame id of its images")).value
            if not source:
                raise ValueError(f"parameter {name}.source is empty: give a device index, path, file or URL")
            self.readers[name] = CameraReader(source, p["reconnect_period_s"], p["loop_file"])
            self.dropped[name] = 0
            self._image_pubs[name] = self.create_publisher(
                Image, Topics.CAMERA_RAW.format(name=name), qos_profile_sensor_data)
            if not self.readers[name].is_open:
                self.get_logger().warning(f"camera {name}: cannot open {source!r} yet; retrying every "
                                          f"{p['reconnect_period_s']} s")
        self._report_period = p["report_period_s"]
        self._reported = time.monotonic()
        self.create_timer(1.0 / p["rate_hz"], self._on_tick)
        self.get_logger().info(f"cameras {names} at {p['rate_hz']} Hz")

    def _on_tick(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for name, reader in self.readers.items():
            was_open = reader.is_open
            frame = reader.read()
            if frame is None:
                self.dropped[name] += 1
                if was_open:
                    self.get_logger().warning(f"camera {name}: read failed; reopening every "
                                              f"{reader.reconnect_period_s} s", throttle_duration_sec=5.0)
                continue
            if not was_open:
                self.get_logger().info(f"camera {name}: {reader.source!r} is back")
            self._image_pubs[name].publish(image_message(frame, stamp, self._frame_ids[name]))
        now = time.monotonic()
        if now - self._reported >= self._report_period:
            self._reported = now
            self.get_logger().info(" | ".join(
                f"{name}: {r.stats.frames} frames, {self.dropped[name]} dropped, {r.stats.reconnects} reconnects"
                for name, r in self.readers.items()))

    def destroy_node(self) -> None:
        for reader in self.readers.values():
            reader.close()
        super().destroy_node()


def main(args=None) -> None:
    run_node(CameraNode, args=args)


if __name__ == "__main__":
    main()
