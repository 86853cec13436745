"""Keyboard reader through a real pseudo-terminal: the reader opens the slave's path, the test
types into the master. Key map, held vs released timing, toggle edges, escape sequences, the
terminal settings restored, hang-up -> DeviceError, re-open, no terminal -> DeviceError."""

from __future__ import annotations

import os
import subprocess
import sys
import termios
import time

import numpy as np
import pytest

from hilserl_teleop.devices import keyboard
from hilserl_teleop.devices.base import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, DeviceError

RELEASE_S = 0.1
REPEAT_DELAY_S = 0.2


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def hang_up(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def close(self) -> None:
        self.hang_up()
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None


@pytest.fixture
def pty():
    terminal = Pty()
    yield terminal
    terminal.close()


@pytest.fixture
def reader(pty):
    reader = keyboard.make_reader({"path": pty.path, "release_s": RELEASE_S, "repeat_delay_s": REPEAT_DELAY_S})
    reader.open()
    yield reader
    reader.close()


def _one_hot(index: int, value: float) -> np.ndarray:
    out = np.zeros(6)
    out[index] = value
    return out


def test_every_motion_key_lower_and_upper_case(pty, reader):
    for key, (index, sign) in keyboard.MOTION_KEYS.items():
        for typed, speed in ((key, 0.5), (key.upper(), 1.0)):
            pty.type(typed.encode())
            command = reader.read(1.0)
            assert command is not None, typed
            np.testing.assert_allclose(command.deltas, _one_hot(index, sign * speed), err_msg=typed)
            assert command.active and not command.toggle_intervention and command.gripper == GRIPPER_STAY
    assert keyboard.MOTION_KEYS["w"] == (0, 1.0) and keyboard.MOTION_KEYS["d"] == (1, -1.0)
    assert keyboard.MOTION_KEYS["r"] == (2, 1.0) and keyboard.MOTION_KEYS["e"] == (5, -1.0)


def test_a_key_is_held_while_its_repeats_arrive_and_released_after_release_s(pty, reader):
    pty.type(b"w")
    first = reader.read(1.0)
    assert first.active and first.deltas[0] == 0.5
    last_repeat = time.monotonic()
    for _ in range(8):  # auto-repeat at 20 Hz for 0.4 s: longer than repeat_delay_s, still held
        time.sleep(0.05)
        pty.type(b"w")
        last_repeat = time.monotonic()
        command = reader.read(1.0)
        assert command.active and command.deltas[0] == 0.5
    released = None
    while released is None or released.active:
        released = reader.read(1.0)
    waited = time.monotonic() - last_repeat
    assert RELEASE_S - 0.01 <= waited < RELEASE_S + 0.08
    assert not released.active and np.all(released.deltas == 0.0)
    assert released.stamp >= last_repeat + RELEASE_S - 0.01
    assert reader.read(0.05) is None  # nothing new


def test_a_tap_counts_as_held_for_the_repeat_delay_and_a_new_key_replaces_the_held_one(pty, reader):
    pty.type(b"a")
    start = time.monotonic()
    assert reader.read(1.0).deltas[1] == 0.5
    assert reader.read(REPEAT_DELAY_S - 0.05) is None  # still held (no repeat, within the delay)
    released = reader.read(1.0)
    assert not released.active and REPEAT_DELAY_S - 0.01 <= time.monotonic() - start < REPEAT_DELAY_S + 0.08

    pty.type(b"a")
    reader.read(1.0)
    pty.type(b"f")  # the terminal now repeats f only: a is let go at once
    command = reader.read(1.0)
    np.testing.assert_allclose(command.deltas, _one_hot(2, -0.5))


def test_toggle_and_gripper_are_edges_once_per_press(pty, reader):
    pty.type(b"i")
    assert reader.read(1.0).toggle_intervention
    pty.type(b"i")  # an auto-repeat of the held key: no second toggle
    repeat = reader.read(1.0)
    assert repeat is not None and not repeat.toggle_intervention and not repeat.active
    assert reader.read(1.0) is not None  # released
    pty.type(b"\t")  # Tab is the same key
    assert reader.read(1.0).toggle_intervention
    reader.read(1.0)

    pty.type(b" ")
    close = reader.read(1.0)
    assert (close.gripper, close.active) == (GRIPPER_CLOSE, True)
    pty.type(b" ")  # repeat: the gripper does not flip back
    assert reader.read(1.0).gripper == GRIPPER_CLOSE
    after = reader.read(1.0)
    assert (after.gripper, after.active) == (GRIPPER_STAY, False)  # a later motion re-sends nothing
    pty.type(b" ")
    assert reader.read(1.0).gripper == GRIPPER_OPEN


def test_escape_sequences_and_unmapped_bytes_are_ignored(pty, reader):
    pty.type(b"\x1b[A\x1bOPx1\xc3\xa9")  # arrow up, F1, unmapped ASCII, UTF-8 e-acute
    assert reader.read(0.1) is None
    pty.type(b"\x1b[1;5Cw")  # Ctrl-right, then w: 'C' of the sequence is not y-
    np.testing.assert_allclose(reader.read(1.0).deltas, _one_hot(0, 0.5))


def test_read_blocks_without_spinning(pty, reader):
    cpu, start = time.process_time(), time.monotonic()
    assert reader.read(0.3) is None
    assert 0.29 <= time.monotonic() - start < 0.4
    assert time.process_time() - cpu < 0.05


def test_terminal_settings_are_cbreak_while_open_and_restored_on_close(pty):
    before = termios.tcgetattr(pty.slave)
    assert before[3] & termios.ICANON and before[3] & termios.ECHO
    reader = keyboard.make_reader({"path": pty.path})
    reader.open()
    during = termios.tcgetattr(pty.slave)
    assert not during[3] & termios.ICANON and not during[3] & termios.ECHO and during[3] & termios.ISIG
    reader.close()
    assert termios.tcgetattr(pty.slave) == before
    reader.close()  # twice is fine
    with reader:  # re-open, context manager closes
        pty.type(b"q")
        assert reader.read(1.0).deltas[5] == 0.5
    assert termios.tcgetattr(pty.slave) == before


def test_hang_up_raises_device_error_and_a_new_terminal_opens(pty, reader):
    pty.type(b"w")
    assert reader.read(1.0).active
    pty.hang_up()
    with pytest.raises(DeviceError, match=pty.path):
        reader.read(1.0)
    reader.close()
    pty.close()  # the pty is gone for good
    with pytest.raises(DeviceError, match="cannot open terminal"):
        reader.open()

    other = Pty()
    try:
        reader.path = other.path
        reader.open()
        assert reader.read(0.05) is None  # a fresh state: nothing held after the loss
        other.type(b"s")
        assert reader.read(1.0).deltas[0] == -0.5
        reader.close()
    finally:
        other.close()


def test_no_terminal_is_a_device_error_naming_it(tmp_path):
    missing = tmp_path / "no_such_tty"
    with pytest.raises(DeviceError, match=str(missing)):
        keyboard.make_reader({"path": str(missing)}).open()
    plain = tmp_path / "plain_file"
    plain.write_text("w")
    with pytest.raises(DeviceError, match="not a terminal"):
        keyboard.make_reader({"path": str(plain)}).open()
    # A process with no controlling terminal (a daemon, a launch without a tty): /dev/tty fails.
    code = ("from hilserl_teleop.devices import keyboard\n"
            "from hilserl_teleop.devices.base import DeviceError\n"
            "try:\n    keyboard.make_reader({}).open()\nexcept DeviceError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         start_new_session=True, stdin=subprocess.DEVNULL)
    assert "keyboard: cannot open terminal /dev/tty" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("values, name", [
    ({"release_s": 0.0}, "release_s"), ({"repeat_delay_s": float("nan")}, "repeat_delay_s"),
    ({"speed": 1.5}, "speed"), ({"fast_speed": -0.1}, "fast_speed"), ({"path": ""}, "path")])
def test_bad_values_are_refused_naming_the_parameter(values, name):
    with pytest.raises(ValueError, match=f"keyboard.{name}"):
        keyboard.make_reader(values)
