"""Human input devices, without ROS: one reader per device (``base.DeviceReader``)."""
