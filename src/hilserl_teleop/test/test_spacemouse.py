"""SpaceMouse reader: HID report bytes -> pyspacemouse's own decoding -> base-frame HumanCommand.

Only the physical device is replaced: ``FakeHID`` stands where easyhid's ``HIDDevice`` stands
(``open``, ``read(size, timeout_ms)``, ``close``) and returns HID input reports built from the
HID axis meaning (report 1: x right, y toward the user, z down; report 2: Rx, Ry, Rz about those
axes; report 3: button bits; int16 little-endian, about +-350 at full deflection). pyspacemouse's
device table and ``SpaceMouseDevice`` decode them as they decode a real device's reports.
"""

import struct
import time

import numpy as np
import pytest
from easyhid import HIDException

from hilserl_teleop.devices.base import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, DeviceError
from hilserl_teleop.devices.spacemouse import PARAMETERS, SpaceMouseReader, make_reader

COMPACT = (0x256F, 0xC635)   # 6 axes in reports 1 (translation) and 2 (rotation)
WIRELESS = (0x256F, 0xC62E)  # 6 axes in report 1
FULL = 350


def translation(x=0, y=0, z=0):
    return bytes([1]) + struct.pack("<hhh", x, y, z)


def rotation(rx=0, ry=0, rz=0):
    return bytes([2]) + struct.pack("<hhh", rx, ry, rz)


def all_axes(x=0, y=0, z=0, rx=0, ry=0, rz=0):
    return bytes([1]) + struct.pack("<hhhhhh", x, y, z, rx, ry, rz)


def buttons(left=False, right=False):
    return bytes([3, int(left) | int(right) << 1, 0, 0, 0, 0, 0])


def motion(model, x=0, y=0, z=0, rx=0, ry=0, rz=0):
    """The reports a model sends for one pose of its cap."""
    if model == WIRELESS:
        return [all_axes(x, y, z, rx, ry, rz)]
    return [translation(x, y, z), rotation(rx, ry, rz)]


class FakeHID:
    """An easyhid ``HIDDevice`` whose reports come from ``reports``; ``unplugged`` makes reads fail
    as hidapi does when the device is gone (-1 -> HIDException)."""

    def __init__(self, ids=COMPACT, path="/dev/hidraw7"):
        self.vendor_id, self.product_id = ids
        self.path = path
        self.product_string, self.manufacturer_string = "SpaceMouse", "3Dconnexion"
        self.release_number, self.serial_number = 0x437, ""
        self.reports: list[bytes] = []
        self.timeouts: list[int] = []
        self.unplugged = False
        self.is_open = False

    def open(self):
        if self.is_open:
            raise HIDException("Failed to open device: HIDDevice already open")
        self.is_open = True

    def close(self):
        self.is_open = False

    def read(self, size=64, timeout=None):
        assert self.is_open
        self.timeouts.append(timeout)
        if self.unplugged:
            raise HIDException("Failed to read from HID device: -1")
        if self.reports:
            report = self.reports.pop(0)
            return bytearray(report[:size].ljust(size, b"\0"))
        time.sleep(timeout / 1000.0)  # hid_read_timeout blocks in poll() this long
        return bytearray()


class FakeBus:
    def __init__(self, *devices):
        self.devices = list(devices)

    def find(self):
        return list(self.devices)


def opened(values=None, ids=COMPACT):
    hid = FakeHID(ids)
    reader = SpaceMouseReader(values or {}, hid_devices=FakeBus(hid).find)
    reader.open()
    return reader, hid


def command_after(reader, hid, reports):
    hid.reports.extend(reports)
    command = reader.read(0.5)
    assert command is not None and not hid.reports
    return command


# Cap motions of the operator (behind the robot, facing base +x) and the default base-frame deltas.
# HID frame: x right, y toward the user, z down; rotations right-handed about those axes.
MOTIONS = {
    "push away": (dict(y=-FULL), [1, 0, 0, 0, 0, 0]),
    "push left": (dict(x=-FULL), [0, 1, 0, 0, 0, 0]),
    "lift": (dict(z=-FULL), [0, 0, 1, 0, 0, 0]),
    "tilt right": (dict(ry=-FULL), [0, 0, 0, 1, 0, 0]),     # top to the right: +roll about base x
    "tilt away": (dict(rx=-FULL), [0, 0, 0, 0, 1, 0]),      # top away: +pitch about base y
    "twist ccw": (dict(rz=-FULL), [0, 0, 0, 0, 0, 1]),      # counter-clockwise from above: +yaw
    "half right": (dict(x=FULL // 2), [0, -(0.5 - 0.1) / 0.9, 0, 0, 0, 0]),
}


@pytest.mark.parametrize("model", [COMPACT, WIRELESS], ids=["compact", "wireless"])
@pytest.mark.parametrize("name", sorted(MOTIONS))
def test_cap_motion_gives_base_frame_delta(model, name):
    axes, expected = MOTIONS[name]
    reader, hid = opened(ids=model)
    command = command_after(reader, hid, motion(model, **axes))
    np.testing.assert_allclose(command.deltas, expected, atol=1e-9)
    assert command.active and command.gripper == GRIPPER_STAY and not command.toggle_intervention


def test_deadband_scale_and_remapped_axes():
    reader, hid = opened({"deadband": 0.2, "scale": [0.5, 1.0, 1.0, 1.0, 1.0, 1.0],
                          "axes": [1, -1, 0, 3, 4, 5], "signs": [-1, 1, 1, 1, 1, 1]})
    # y = 0.1 full scale toward the user, x = 0.6 right: inside / outside the 0.2 deadband
    command = command_after(reader, hid, [translation(x=210, y=35)])
    np.testing.assert_allclose(command.deltas, [0, 0, (0.6 - 0.2) / 0.8, 0, 0, 0], atol=1e-9)
    # pushed away twice full scale: raw y clips to 1; base x reads it negated, at half gain
    command = command_after(reader, hid, [translation(y=-2 * FULL)])
    np.testing.assert_allclose(command.deltas, [-0.5, 0, 0, 0, 0, 0], atol=1e-9)


def test_inside_deadband_is_not_active():
    reader, hid = opened()
    command = command_after(reader, hid, [translation(x=20, y=-30, z=10), rotation(rx=5)])
    np.testing.assert_array_equal(command.deltas, np.zeros(6))
    assert not command.active


def test_gripper_toggles_and_intervention_edges_once_per_press():
    reader, hid = opened()
    left, right, none = buttons(left=True), buttons(right=True), buttons()
    first = command_after(reader, hid, [left])
    assert (first.gripper, first.active, first.toggle_intervention) == (GRIPPER_CLOSE, True, False)
    held = command_after(reader, hid, [left])  # the device repeats a report while held
    assert held.gripper == GRIPPER_CLOSE
    released = command_after(reader, hid, [none])
    assert (released.gripper, released.active) == (GRIPPER_CLOSE, False)
    assert command_after(reader, hid, [left, none]).gripper == GRIPPER_OPEN
    pressed = command_after(reader, hid, [right])
    assert pressed.toggle_intervention and pressed.active and pressed.gripper == GRIPPER_OPEN
    assert not command_after(reader, hid, [right]).toggle_intervention
    assert not command_after(reader, hid, [none]).toggle_intervention
    # a press and its release queued between two reads still toggle, once
    assert command_after(reader, hid, [right, none, translation()]).toggle_intervention


def test_hold_to_close():
    reader, hid = opened({"gripper_mode": "hold"})
    assert command_after(reader, hid, [translation(x=FULL)]).gripper == GRIPPER_STAY
    assert command_after(reader, hid, [buttons(left=True)]).gripper == GRIPPER_CLOSE
    assert command_after(reader, hid, [buttons(left=True)]).gripper == GRIPPER_CLOSE
    assert command_after(reader, hid, [buttons()]).gripper == GRIPPER_OPEN


def test_queued_reports_make_one_command_with_the_latest_state():
    reader, hid = opened()
    before = time.monotonic()
    command = command_after(reader, hid, [translation(x=FULL), translation(y=-FULL), rotation(rz=-FULL)])
    np.testing.assert_allclose(command.deltas, [1, 0, 0, 0, 0, 1], atol=1e-9)
    assert before <= command.stamp <= time.monotonic()


def test_read_waits_in_the_device_and_returns_none_without_input():
    reader, hid = opened()
    start = time.monotonic()
    assert reader.read(0.15) is None
    elapsed = time.monotonic() - start
    assert 0.14 <= elapsed < 0.5
    assert len(hid.timeouts) <= 2 and hid.timeouts[0] >= 140  # one blocking read, not a spin
    assert reader.read(0.0) is None


def test_absent_device_names_it():
    with pytest.raises(DeviceError, match="no supported SpaceMouse connected"):
        SpaceMouseReader({}, hid_devices=FakeBus().find).open()
    reader = SpaceMouseReader({"device": "SpaceMouseCompact"}, hid_devices=FakeBus(FakeHID(WIRELESS)).find)
    with pytest.raises(DeviceError, match="no SpaceMouseCompact connected"):
        reader.open()
    with pytest.raises(DeviceError, match="unknown model 'SpaceMouseNano'"):
        SpaceMouseReader({"device": "SpaceMouseNano"}, hid_devices=FakeBus().find).open()


def test_real_hid_enumeration_without_a_spacemouse():
    """The production path through easyhid/hidapi: nothing plugged in on this machine."""
    reader = make_reader({})
    with pytest.raises(DeviceError, match="spacemouse: no supported SpaceMouse connected"):
        reader.open()
    reader.close()


def test_unplug_raises_and_replug_reopens():
    hid = FakeHID()
    bus = FakeBus(hid)
    reader = SpaceMouseReader({}, hid_devices=bus.find)
    reader.open()
    assert command_after(reader, hid, [buttons(left=True)]).gripper == GRIPPER_CLOSE
    hid.unplugged = True
    with pytest.raises(DeviceError, match=r"SpaceMouseCompact at '/dev/hidraw7'.*unplugged"):
        reader.read(0.1)
    assert not hid.is_open
    bus.devices = []
    with pytest.raises(DeviceError, match="no supported SpaceMouse"):
        reader.open()
    replugged = FakeHID(path="/dev/hidraw8")
    bus.devices = [replugged]
    reader.open()
    command = command_after(reader, replugged, [translation(z=-FULL)])
    np.testing.assert_allclose(command.deltas, [0, 0, 1, 0, 0, 0], atol=1e-9)
    assert command.gripper == GRIPPER_STAY  # a fresh device: no remembered gripper choice
    reader.close()
    reader.close()
    assert not replugged.is_open
    with pytest.raises(DeviceError, match="not open"):
        reader.read(0.0)


def test_bad_parameters_are_named():
    assert set(PARAMETERS) >= {"axes", "signs", "deadband", "scale", "gripper_mode"}
    for values, name in [({"gripper_mode": "latch"}, "gripper_mode"), ({"axes": [0, 1, 2]}, "axes"),
                         ({"signs": [1, 1, 1, 1, 1, 2]}, "signs"), ({"deadband": 1.5}, "deadband"),
                         ({"speed": 1}, "speed"), ({"intervention_button": "LEFT"}, "intervention_button")]:
        with pytest.raises(ValueError, match=name):
            make_reader(values)
    reader = SpaceMouseReader({"gripper_button": "MENU"}, hid_devices=FakeBus(FakeHID()).find)
    with pytest.raises(DeviceError, match="no button 'MENU'.*LEFT"):
        reader.open()


def test_refused_open_names_the_device():
    hid = FakeHID()
    hid.is_open = True  # easyhid refuses a second open; hidapi refuses a hidraw node without permission
    with pytest.raises(DeviceError, match=r"SpaceMouseCompact at '/dev/hidraw7': cannot open it.*already open"):
        SpaceMouseReader({}, hid_devices=FakeBus(hid).find).open()
