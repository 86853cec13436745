"""Cameras: crop/resize exactness, Image conversion round trips, capture from a real video file
through OpenCV (order, colour, looping), a source that fails and comes back, the ROI tool."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from hilserl_drivers.camera import CameraReader, Roi, crop_resize  # noqa: E402
from hilserl_testing import RED_STEP, write_video  # noqa: E402

def red(frame: np.ndarray) -> int:
    return int(round(float(frame[..., 0].mean()) / RED_STEP))


def test_crop_then_area_resize_averages_whole_pixels():
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = np.arange(64).reshape(8, 8) * 2  # even values: 2x2 means of a row pair are exact
    out = crop_resize(image, Roi(2, 2, 4, 4), 2)
    block = image[2:6, 2:6, 0].astype(float)
    expected = [[block[:2, :2].mean(), block[:2, 2:].mean()], [block[2:, :2].mean(), block[2:, 2:].mean()]]
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], np.array(expected))
    np.testing.assert_array_equal(crop_resize(image, Roi(1, 3, 4, 4), 4), image[3:7, 1:5])  # crop only
    assert crop_resize(image, None, 16).shape == (16, 16, 3)  # enlarging works too
    with pytest.raises(ValueError, match=r"reaches outside the 8x8 image"):
        crop_resize(image, Roi(6, 0, 4, 4), 2)
    with pytest.raises(ValueError, match="four integers"):
        Roi.parse([1, 2, 3])
    with pytest.raises(ValueError, match="width, height >= 1"):
        Roi.parse([0, 0, 0, 5])
    assert Roi.parse([]) is None and Roi.parse([1, 2, 3, 4]) == Roi(1, 2, 3, 4)


def test_image_messages_round_trip_in_every_encoding_used():
    from sensor_msgs.msg import Image

    from hilserl_drivers.image_msgs import image_array, image_message

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = image_message(rgb, Image().header.stamp, "cam")
    assert (msg.encoding, msg.step, msg.height, msg.width) == ("rgb8", 21, 5, 7)
    np.testing.assert_array_equal(image_array(msg), rgb)
    bgr = Image(height=5, width=7, encoding="bgr8", step=24)  # rows padded to 24 bytes
    padded = np.zeros((5, 24), np.uint8)
    padded[:, :21] = rgb[..., ::-1].reshape(5, 21)
    bgr.data = padded.tobytes()
    np.testing.assert_array_equal(image_array(bgr), rgb)
    mono = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(6)))
    np.testing.assert_array_equal(image_array(mono)[..., 2], np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="encoding '16UC1'"):
        image_array(Image(height=1, width=1, encoding="16UC1", step=2, data=b"\x00\x00"))
    with pytest.raises(ValueError, match="needs step >= 21 and 105 bytes"):
        image_array(Image(height=5, width=7, encoding="rgb8", step=21, data=bytes(50)))


def test_a_video_file_stands_in_for_a_camera_and_loops(tmp_path):
    path = tmp_path / "front.avi"
    write_video(path)
    reader = CameraReader(str(path))
    frames = [reader.read() for _ in range(13)]
    assert all(f is not None and f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in frames)
    assert [red(f) for f in frames] == list(range(10)) + [0, 1, 2]  # in order, then again
    assert abs(int(frames[5][..., 1].mean()) - 100) <= 3 and abs(int(frames[5][..., 2].mean()) - 200) <= 3  # RGB
    assert reader.stats.frames == 13 and reader.stats.failures == 0
    reader.close()


def test_a_failing_source_is_reopened_when_it_comes_back(tmp_path):
    now = [0.0]
    path = tmp_path / "cam.avi"
    reader = CameraReader(str(path), reconnect_period_s=1.0, loop_file=False, clock=lambda: now[0])
    assert not reader.is_open and reader.read() is None  # not there yet
    write_video(path, frames=3)
    assert reader.read() is None  # the reconnect period has not passed
    now[0] = 1.5
    assert [red(reader.read()) for _ in range(3)] == [0, 1, 2]
    assert reader.read() is None and reader.stats.failures == 1  # the stream ended: a failure
    now[0] = 2.0
    assert reader.read() is None  # waits a period before reopening
    now[0] = 2.6
    assert red(reader.read()) == 0 and reader.stats.reconnects == 1  # back
    assert reader.stats.open_attempts == 3
    with pytest.raises(ValueError, match="source is empty"):
        CameraReader("")


def test_roi_tool_writes_the_preprocessing_parameters(tmp_path):
    import yaml

    from hilserl_drivers import roi_tool

    frame = np.zeros((120, 160, 3), np.uint8)
    frame[20:80, 40:100] = (255, 0, 0)
    cv2.imwrite(str(tmp_path / "f.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "cameras.yaml"
    out.write_text(yaml.safe_dump({"other_node": {"ros__parameters": {"x": 1}}}))
    assert roi_tool.main([str(tmp_path / "f.png"), "--camera", "front", "--roi", "40,20,60,60",
                          "--out", str(out), "--preview", str(tmp_path / "p.png")]) == 0
    params = yaml.safe_load(out.read_text())
    assert params["other_node"]["ros__parameters"] == {"x": 1}
    assert params["camera_preprocess"]["ros__parameters"] == {
        "camera_names": ["front"], "image_size": 128, "front.roi": [40, 20, 60, 60]}
    preview = cv2.imread(str(tmp_path / "p.png"))
    assert tuple(preview[20, 70]) == (0, 255, 0) and tuple(preview[50, 99]) == (0, 255, 0)  # the box (BGR)
    assert roi_tool.main([str(tmp_path / "f.png"), "--camera", "front", "--roi", "150,0,20,20",
                          "--out", str(out)]) == 2  # outside the frame
    assert roi_tool.main([str(tmp_path / "f.png"), "--camera", "front", "--out", str(out)]) == 2  # headless
