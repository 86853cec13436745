"""Gamepad reader: evdev ``InputEvent`` streams -> base-frame HumanCommand.

No /dev/uinput here, so ``FakePad`` stands where ``evdev.InputDevice`` stands: evdev's own
``InputEvent`` objects and ``ecodes``, an Xbox pad's absinfo as the xpad driver reports it, and a
pipe as its fd so the reader's ``select`` really blocks and wakes. The device path that does not
exist goes through the real ``evdev.InputDevice``.
"""

import errno
import os
import time

import numpy as np
import pytest
from evdev import AbsInfo, InputEvent, ecodes

from hilserl_teleop.devices.base import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, DeviceError
from hilserl_teleop.devices.gamepad import PARAMETERS, GamepadReader, make_reader

STICK = AbsInfo(value=0, min=-32768, max=32767, fuzz=16, flat=128, resolution=0)
TRIGGER = AbsInfo(value=0, min=0, max=1023, fuzz=0, flat=0, resolution=0)
HAT = AbsInfo(value=0, min=-1, max=1, fuzz=0, flat=0, resolution=0)
XBOX_ABS = {ecodes.ABS_X: STICK, ecodes.ABS_Y: STICK, ecodes.ABS_RX: STICK, ecodes.ABS_RY: STICK,
            ecodes.ABS_Z: TRIGGER, ecodes.ABS_RZ: TRIGGER, ecodes.ABS_HAT0X: HAT, ecodes.ABS_HAT0Y: HAT}
XBOX_KEYS = [ecodes.BTN_SOUTH, ecodes.BTN_EAST, ecodes.BTN_NORTH, ecodes.BTN_WEST, ecodes.BTN_TL, ecodes.BTN_TR,
             ecodes.BTN_SELECT, ecodes.BTN_START, ecodes.BTN_MODE, ecodes.BTN_THUMBL, ecodes.BTN_THUMBR]


def event(type_, code, value):
    now = time.time()
    return InputEvent(int(now), int(now % 1 * 1e6), type_, code, value)


def axis(code, value):
    return event(ecodes.EV_ABS, code, value)


def key(code, value):
    return event(ecodes.EV_KEY, code, value)


def syn(code=ecodes.SYN_REPORT):
    return event(ecodes.EV_SYN, code, 0)


class FakePad:
    """What the reader uses of ``evdev.InputDevice``; ``push`` queues events (and wakes select),
    ``unplug`` makes reads fail with ENODEV as the kernel does."""

    def __init__(self, path="/dev/input/event5", name="Microsoft X-Box 360 pad", abs_info=None, keys=None):
        self.path, self.name = path, name
        self.abs_info = dict(XBOX_ABS if abs_info is None else abs_info)
        self.keys = list(XBOX_KEYS if keys is None else keys)
        self.held: list[int] = []
        self.queue: list[InputEvent] = []
        self.reads = 0
        self.unplugged = False
        self._r, self._w = os.pipe()
        self.closed = False

    def push(self, *events):
        self.queue.extend(events)
        os.write(self._w, b"x")

    def unplug(self):
        self.unplugged = True
        os.write(self._w, b"x")

    def fileno(self):
        return self._r

    def read(self):
        self.reads += 1
        if self.unplugged:
            raise OSError(errno.ENODEV, "No such device")
        if not self.queue:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        os.read(self._r, 4096)
        events, self.queue = self.queue, []
        return iter(events)

    def capabilities(self, absinfo=True):
        assert not absinfo
        return {ecodes.EV_SYN: [0], ecodes.EV_KEY: self.keys, ecodes.EV_ABS: sorted(self.abs_info)}

    def absinfo(self, code):
        return self.abs_info[code]

    def active_keys(self):
        return list(self.held)

    def close(self):
        if not self.closed:
            os.close(self._r)
            os.close(self._w)
        self.closed = True


class FakeInput:
    """``/dev/input`` with some devices: ``open_device`` and ``list_devices`` for the reader."""

    def __init__(self, *pads):
        self.pads = {pad.path: pad for pad in pads}

    def open_device(self, path):
        if path not in self.pads:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        pad = self.pads[path]
        if pad.closed:  # a reopened device is a new file description
            self.pads[path] = pad = FakePad(pad.path, pad.name, pad.abs_info, pad.keys)
        return pad

    def list_devices(self):
        return list(self.pads)


def opened(values=None, pad=None):
    pad = pad or FakePad()
    devices = FakeInput(pad)
    reader = GamepadReader(values or {}, open_device=devices.open_device, list_devices=devices.list_devices)
    reader.open()
    return reader, pad


def command_after(reader, pad, *events):
    pad.push(*events, syn())
    command = reader.read(0.5)
    assert command is not None and not pad.queue
    return command


# Pad motions of the operator (behind the robot, facing base +x) and the default base-frame deltas.
MOTIONS = {
    "left stick forward": ([axis(ecodes.ABS_Y, -32768)], [1, 0, 0, 0, 0, 0]),
    "left stick left": ([axis(ecodes.ABS_X, -32768)], [0, 1, 0, 0, 0, 0]),
    "right stick forward": ([axis(ecodes.ABS_RY, -32768)], [0, 0, 1, 0, 0, 0]),
    "right stick left": ([axis(ecodes.ABS_RX, -32768)], [0, 0, 0, 0, 0, 1]),
    "left stick back half": ([axis(ecodes.ABS_Y, 16384)], [-(0.5 - 0.15) / 0.85, 0, 0, 0, 0, 0]),
    "both sticks": ([axis(ecodes.ABS_X, 32767), axis(ecodes.ABS_RY, 32767)], [0, -1, -1, 0, 0, 0]),
}


@pytest.mark.parametrize("name", sorted(MOTIONS))
def test_stick_motion_gives_base_frame_delta(name):
    events, expected = MOTIONS[name]
    reader, pad = opened()
    command = command_after(reader, pad, *events)
    np.testing.assert_allclose(command.deltas, expected, atol=1e-4)  # 1/65535: the centre is -0.5 count
    assert command.active and command.gripper == GRIPPER_STAY and not command.toggle_intervention


def test_triggers_are_one_sided_and_dpad_mappable():
    reader, pad = opened({"axes": [1, 0, 5, 6, 7, 2], "signs": [-1, -1, 1, 1, -1, -1], "deadband": 0.1})
    rest = command_after(reader, pad, axis(ecodes.ABS_RZ, 0), axis(ecodes.ABS_Z, 0))
    np.testing.assert_allclose(rest.deltas, np.zeros(6), atol=1e-9)
    assert not rest.active  # triggers at rest read 0, not -1
    command = command_after(reader, pad, axis(ecodes.ABS_RZ, 1023), axis(ecodes.ABS_HAT0X, 1),
                            axis(ecodes.ABS_HAT0Y, -1))
    np.testing.assert_allclose(command.deltas, [0, 0, 1, 1, 1, 0], atol=1e-9)
    half = command_after(reader, pad, axis(ecodes.ABS_RZ, 512), axis(ecodes.ABS_HAT0X, 0), axis(ecodes.ABS_HAT0Y, 0))
    np.testing.assert_allclose(half.deltas[2], (512 / 1023 - 0.1) / 0.9, atol=1e-9)
    assert half.active
    left_trigger = command_after(reader, pad, axis(ecodes.ABS_RZ, 0), axis(ecodes.ABS_Z, 1023))
    np.testing.assert_allclose(left_trigger.deltas, np.zeros(6), atol=1e-9)
    assert left_trigger.active  # a listed axis beyond the deadband, mapped or not


def test_drift_inside_deadband_is_not_active():
    reader, pad = opened()
    command = command_after(reader, pad, axis(ecodes.ABS_X, 3000), axis(ecodes.ABS_Y, -4000),
                            axis(ecodes.ABS_RX, 2500))
    np.testing.assert_array_equal(command.deltas, np.zeros(6))
    assert not command.active


def test_buttons_gripper_and_intervention_edge():
    reader, pad = opened()
    close = command_after(reader, pad, key(ecodes.BTN_SOUTH, 1))
    assert (close.gripper, close.active, close.toggle_intervention) == (GRIPPER_CLOSE, True, False)
    released = command_after(reader, pad, key(ecodes.BTN_SOUTH, 0))
    assert (released.gripper, released.active) == (GRIPPER_CLOSE, False)
    assert command_after(reader, pad, key(ecodes.BTN_EAST, 1), key(ecodes.BTN_EAST, 0)).gripper == GRIPPER_OPEN
    start = command_after(reader, pad, key(ecodes.BTN_START, 1))
    assert start.toggle_intervention and start.active and start.gripper == GRIPPER_OPEN
    repeat = command_after(reader, pad, key(ecodes.BTN_START, 2))  # autorepeat: still held, no new edge
    assert repeat.active and not repeat.toggle_intervention
    assert not command_after(reader, pad, key(ecodes.BTN_START, 0)).toggle_intervention
    # an unmapped button is input (a command comes back) but neither active nor a toggle
    other = command_after(reader, pad, key(ecodes.BTN_WEST, 1))
    assert not other.active and not other.toggle_intervention
    # a press and release in one batch toggle once
    assert command_after(reader, pad, key(ecodes.BTN_START, 1), syn(), key(ecodes.BTN_START, 0)).toggle_intervention


def test_shoulder_button_as_intervention_button():
    reader, pad = opened({"intervention_button": "BTN_TR"})
    assert not command_after(reader, pad, key(ecodes.BTN_START, 1)).toggle_intervention
    assert command_after(reader, pad, key(ecodes.BTN_TR, 1)).toggle_intervention


def test_state_at_open_and_after_dropped_events_comes_from_the_device():
    pad = FakePad()
    pad.abs_info[ecodes.ABS_Y] = STICK._replace(value=-32768)  # held forward when opened
    pad.held = [ecodes.BTN_START]
    reader, pad = opened(pad=pad)
    command = command_after(reader, pad, key(ecodes.BTN_START, 1))  # already held: no edge
    np.testing.assert_allclose(command.deltas, [1, 0, 0, 0, 0, 0], atol=1e-4)
    assert command.active and not command.toggle_intervention
    # the kernel's buffer overflowed: the release of START and the stick's return were lost
    pad.abs_info[ecodes.ABS_Y] = STICK._replace(value=0)
    pad.abs_info[ecodes.ABS_RX] = STICK._replace(value=32767)
    pad.held = []
    command = command_after(reader, pad, syn(ecodes.SYN_DROPPED), axis(ecodes.ABS_X, 32767))
    np.testing.assert_allclose(command.deltas, [0, 0, 0, 0, 0, -1], atol=1e-4)
    assert command.active
    assert command_after(reader, pad, key(ecodes.BTN_START, 1)).toggle_intervention


def test_read_blocks_in_select_and_returns_none_without_input():
    reader, pad = opened()
    start = time.monotonic()
    assert reader.read(0.15) is None
    assert 0.14 <= time.monotonic() - start < 0.5
    assert pad.reads == 0  # select waited; nothing was polled
    assert reader.read(0.0) is None
    before = time.monotonic()
    command = command_after(reader, pad, axis(ecodes.ABS_X, 0))
    assert before <= command.stamp <= time.monotonic()


def test_missing_path_names_it_through_real_evdev():
    reader = make_reader({"device": "/dev/input/event99"})
    with pytest.raises(DeviceError, match="'/dev/input/event99': no such device"):
        reader.open()
    reader.close()


def test_device_by_name_substring_or_first_gamepad():
    keyboard = FakePad("/dev/input/event2", "AT Translated Set 2 keyboard", abs_info={}, keys=[ecodes.KEY_A])
    pad = FakePad("/dev/input/event7", "Xbox Wireless Controller")
    devices = FakeInput(keyboard, pad)
    for device in ("", "xbox WIRELESS", "/dev/input/event7"):
        reader = GamepadReader({"device": device}, open_device=devices.open_device,
                               list_devices=devices.list_devices)
        reader.open()
        command = command_after(reader, devices.pads["/dev/input/event7"], axis(ecodes.ABS_Y, -32768))
        assert command.deltas[0] == pytest.approx(1.0)
        reader.close()
    assert keyboard.closed  # looked at, not kept
    reader = GamepadReader({"device": "DualSense"}, open_device=devices.open_device,
                           list_devices=devices.list_devices)
    with pytest.raises(DeviceError, match="name containing 'DualSense'.*Xbox Wireless Controller"):
        reader.open()
    devices = FakeInput(keyboard)
    with pytest.raises(DeviceError, match="no event device with gamepad buttons"):
        GamepadReader({}, open_device=devices.open_device, list_devices=devices.list_devices).open()


def test_missing_mapped_axis_or_button_is_named():
    pad = FakePad(abs_info={c: i for c, i in XBOX_ABS.items() if c != ecodes.ABS_RY},
                  keys=[k for k in XBOX_KEYS if k != ecodes.BTN_START])
    with pytest.raises(DeviceError, match=r"'/dev/input/event5' \(Microsoft X-Box 360 pad\): lacks "
                                          r"\['ABS_RY', 'BTN_START'\]"):
        opened(pad=pad)
    assert pad.closed
    pad = FakePad(abs_info={c: i for c, i in XBOX_ABS.items() if c not in (ecodes.ABS_HAT0X, ecodes.ABS_Z)})
    reader, pad = opened(pad=pad)  # unmapped axes it lacks read 0
    assert command_after(reader, pad, axis(ecodes.ABS_X, 32767)).deltas[1] == pytest.approx(-1.0)


def test_unplug_raises_and_replug_reopens():
    pad = FakePad()
    devices = FakeInput(pad)
    reader = GamepadReader({"device": pad.path}, open_device=devices.open_device, list_devices=devices.list_devices)
    reader.open()
    assert command_after(reader, pad, key(ecodes.BTN_SOUTH, 1)).gripper == GRIPPER_CLOSE
    pad.unplug()
    with pytest.raises(DeviceError, match=r"gamepad '/dev/input/event5' \(Microsoft X-Box 360 pad\): unplugged"):
        reader.read(0.5)
    assert pad.closed
    del devices.pads[pad.path]
    with pytest.raises(DeviceError, match="'/dev/input/event5': no such device"):
        reader.open()
    devices.pads[pad.path] = replugged = FakePad()
    reader.open()
    command = command_after(reader, replugged, axis(ecodes.ABS_RX, -32768))
    np.testing.assert_allclose(command.deltas, [0, 0, 0, 0, 0, 1], atol=1e-4)
    assert command.gripper == GRIPPER_STAY
    reader.close()
    reader.close()
    assert replugged.closed
    with pytest.raises(DeviceError, match="not open"):
        reader.read(0.0)


def test_bad_parameters_are_named():
    assert set(PARAMETERS) >= {"device", "axes", "signs", "deadband", "scale", "raw_axes"}
    for values, name in [({"raw_axes": ["ABS_X", "ABS_WHEEL_X"]}, "raw_axes"), ({"close_button": "A"}, "close_button"),
                         ({"axes": [0, 1, 2, 3, 4, 8]}, "axes"), ({"signs": [1, 1, 1, 1, 1, 0]}, "signs"),
                         ({"open_button": "BTN_SOUTH"}, "open_button"), ({"trigger_axes": ["BTN_A"]}, "trigger_axes"),
                         ({"rumble": True}, "rumble")]:
        with pytest.raises(ValueError, match=name):
            make_reader(values)
