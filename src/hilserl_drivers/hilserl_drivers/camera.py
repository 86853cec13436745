"""Cameras without ROS: capture that survives a failing source, and the crop/resize of preprocessing.

- ``CameraReader``: one OpenCV ``VideoCapture`` (a device index such as ``"0"``, a
  ``/dev/video*`` path, a video file or a stream URL) read frame by frame as RGB
  uint8. A failed read closes the capture and counts a failure; it is reopened
  every ``reconnect_period_s`` until it works again (an unplugged USB camera, a
  stream that drops, a file that is replaced). A video file that ends starts over
  (``loop_file``), so a recording can stand in for a device.
- ``Roi`` and ``crop_resize``: the preprocessing of a camera image: a region of
  interest in pixels, then a resize to ``size`` x ``size`` (OpenCV's area
  interpolation when shrinking, which averages whole source pixels; linear when
  enlarging).

OpenCV is imported when a capture opens or an image is resized, so this module
loads without it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Roi:
    """A region of interest: top-left corner (x, y) and size (width, height) in pixels."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, values, name: str = "roi") -> "Roi | None":
        """``[]`` (whole image) or ``[x, y, width, height]``; a ValueError names ``name``."""
        values = list(values)
        if not values:
            return None
        if len(values) != 4 or any(int(v) != v for v in values):
            raise ValueError(f"{name}: expected [] or four integers [x, y, width, height], got {values}")
        roi = cls(*(int(v) for v in values))
        if roi.x < 0 or roi.y < 0 or roi.width < 1 or roi.height < 1:
            raise ValueError(f"{name}: x, y must be >= 0 and width, height >= 1, got {values}")
        return roi

    def check_inside(self, height: int, width: int, name: str = "roi") -> None:
        if self.x + self.width > width or self.y + self.height > height:
            raise ValueError(f"{name} [{self.x}, {self.y}, {self.width}, {self.height}] reaches outside "
                             f"the {width}x{height} image")


def crop_resize(image: np.ndarray, roi: Roi | None, size: int) -> np.ndarray:
    """``image`` (H, W, C) uint8 cropped to ``roi`` (None: whole) and resized to (size, size, C)."""
    import cv2

    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype}{image.shape}")
    if roi is not None:
        roi.check_inside(image.shape[0], image.shape[1])
        image = image[roi.y:roi.y + roi.height, roi.x:roi.x + roi.width]
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    shrinking = image.shape[0] >= size and image.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)


@dataclasses.dataclass
class CameraStats:
    frames: int = 0  # frames delivered
    failures: int = 0  # reads that failed (each closes the capture)
    reconnects: int = 0  # successful reopens after a failure
    open_attempts: int = 0


def _open_capture(source: str):
    import cv2

    return cv2.VideoCapture(int(source) if source.isdigit() else source)


class CameraReader:
    """Frames of one source as RGB uint8 arrays; ``read`` returns None while it is failing."""

    def __init__(self, source: str, reconnect_period_s: float = 1.0, loop_file: bool = True,
                 opener: Callable[[str], object] = _open_capture, clock: Callable[[], float] = time.monotonic):
        if not source:
            raise ValueError("camera source is empty: give a device index, a device path, a file or a URL")
        self.source = source
        self.reconnect_period_s = float(reconnect_period_s)
        self.loop_file = loop_file
        self._opener, self._clock = opener, clock
        self._capture = None
        self._failed_at: float | None = None
        self._had_frames = False
        self.stats = CameraStats()
        self._open()

    @property
    def is_open(self) -> bool:
        return self._capture is not None

    def _open(self) -> bool:
        self.stats.open_attempts += 1
        capture = self._opener(self.source)
        if not capture.isOpened():
            capture.release()
            self._failed_at = self._clock()
            return False
        self._capture = capture
        if self._failed_at is not None and self._had_frames:
            self.stats.reconnects += 1
        self._failed_at = None
        return True

    def _fail(self) -> None:
        self.stats.failures += 1
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._failed_at = self._clock()

    def read(self) -> np.ndarray | None:
        import cv2

        if self._capture is None:
            if self._clock() - (self._failed_at or 0.0) < self.reconnect_period_s or not self._open():
                return None
        ok, frame = self._capture.read()
        if not ok and self.loop_file and self._is_file():
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # the recording starts over
            ok, frame = self._capture.read()
        if not ok or frame is None:
            self._fail()
            return None
        self.stats.frames += 1
        self._had_frames = True
        if frame.ndim == 2:
            return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def _is_file(self) -> bool:
        import cv2

        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        return count is not None and count > 0

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
