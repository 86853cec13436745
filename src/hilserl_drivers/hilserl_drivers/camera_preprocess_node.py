"""Camera preprocessing node: ``camera/<name>/image_raw`` -> crop -> resize -> ``camera/<name>/image``.

Per camera (``camera_names``): ``<name>.roi`` = [x, y, width, height] in pixels of the raw
image ([] = the whole image; ``python -m hilserl_drivers.roi_tool`` writes it from a saved
frame), then a resize to ``image_size`` x ``image_size`` (the policy's and the reward
classifier's input, 128 by default). Input rgb8, bgr8 or mono8; output rgb8 with the raw
image's header. A raw image the ROI does not fit, or with a bad encoding, is dropped,
counted and logged (throttled) with what is wrong.
"""

from __future__ import annotations

from rcl_interfaces.msg import IntegerRange, ParameterDescriptor
from rclpy.node import Node
from sensor_msgs.msg import Image

from hilserl_drivers.camera import Roi, crop_resize
from hilserl_drivers.image_msgs import IMAGE_QOS, IMAGE_QOS_DESCRIPTION, image_array, image_message, image_qos
from hilserl_drivers.node_main import declare_parameters, run_node
from hilserl_msgs.msg import Topics

PARAMETERS = {
    "camera_names": (["front"], ParameterDescriptor(
        description="cameras to preprocess; each may set <name>.roi", read_only=True)),
    "image_size": (128, ParameterDescriptor(
        description="output images are image_size x image_size", read_only=True,
        integer_range=[IntegerRange(from_value=8, to_value=2048)])),
    "image_qos": ("sensor_data", ParameterDescriptor(
        description=IMAGE_QOS_DESCRIPTION + " (input and output)", read_only=True,
        additional_constraints="one of " + ", ".join(IMAGE_QOS))),
}


class CameraPreprocessNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera_preprocess", **kwargs)
        qos = image_qos(declare_parameters(self, PARAMETERS)["image_qos"])
        names = [n for n in self.get_parameter("camera_names").value if n]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"camera_names must name distinct cameras, got {names}")
        self.size = int(self.get_parameter("image_size").value)
        self.rois: dict[str, Roi | None] = {}
        self.published = {name: 0 for name in names}
        self.dropped = {name: 0 for name in names}
        self._image_pubs = {}
        for name in names:
            values = self.declare_parameter(f"{name}.roi", [0, 0, 0, 0], ParameterDescriptor(
                description=f"camera {name}: [x, y, width, height] in raw pixels ([0, 0, 0, 0]: whole image)",
                read_only=True)).value
            self.rois[name] = None if list(values) == [0, 0, 0, 0] else Roi.parse(values, f"{name}.roi")
            self._image_pubs[name] = self.create_publisher(Image, Topics.CAMERA.format(name=name), qos)
            self.create_subscription(Image, Topics.CAMERA_RAW.format(name=name),
                                     lambda msg, n=name: self._on_image(n, msg), qos)
        self.get_logger().info("preprocessing " + ", ".join(
            f"{n} (roi {r.x, r.y, r.width, r.height})" if r else f"{n} (whole image)" for n, r in self.rois.items())
            + f" -> {self.size}x{self.size}")

    def _on_image(self, name: str, msg: Image) -> None:
        try:
            image = crop_resize(image_array(msg, f"camera {name}"), self.rois[name], self.size)
        except ValueError as error:
            self.dropped[name] += 1
            self.get_logger().error(f"camera {name}: image dropped: {error}", throttle_duration_sec=5.0)
            return
        self._image_pubs[name].publish(image_message(image, msg.header.stamp, msg.header.frame_id))
        self.published[name] += 1


def main(args=None) -> None:
    run_node(CameraPreprocessNode, args=args)


if __name__ == "__main__":
    main()
