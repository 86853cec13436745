"""Keyboard teleop from a terminal: works over SSH, no display needed. No ROS in here.

The reader opens a terminal (``path``: by default ``/dev/tty``, the process's controlling
terminal; or another terminal's device, e.g. what ``tty`` prints in a second SSH session,
which then runs ``sleep infinity`` so that its shell does not read the keys too), puts it in
cbreak mode (no line buffering, no echo; Ctrl-C still interrupts) and restores the saved
settings on ``close``, always, also at interpreter exit.

Key map (lower case: ``speed``, upper case / shift: ``fast_speed``; deltas in the base frame):

    w / s   x + / -  (forward / back)        q / e   yaw + / -  (turn left / right)
    a / d   y + / -  (left / right)          z / c   roll + / -
    r / f   z + / -  (up / down)             t / g   pitch + / -
    space   gripper: close, then open, then close ... (sent while the press counts as held)
    i, Tab  toggle the take-over (``toggle_intervention``, once per press)

A terminal sends no key-release events, and auto-repeats only the last key pressed. So one
motion key drives at a time (a new one replaces the held one), and a key counts as held while
its repeats keep arriving: ``release_s`` after its last repeat it is released; a first press
counts as held for ``repeat_delay_s`` (the terminal's delay before auto-repeat starts; a tap
moves the arm that long). ``active``: a motion or gripper key is held. A repeat of ``i`` or
space is not a new press: a held key toggles once. Escape sequences (arrows, function keys)
and non-ASCII bytes are ignored.
"""

from __future__ import annotations

import atexit
import errno
import math
import os
import select
import termios
import time

import numpy as np

from hilserl_teleop.devices.base import (
    GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, DeviceError, DeviceReader, HumanCommand)

PARAMETERS = {
    "path": ("/dev/tty", "terminal to read keys from: /dev/tty (this process's terminal) or a "
                         "terminal device such as /dev/pts/3 (run `tty` there)"),
    "release_s": (0.25, "a held key is released this long (s) after its last auto-repeat"),
    "repeat_delay_s": (0.6, "a first key press counts as held this long (s): a little more than the "
                            "terminal's auto-repeat delay (often 0.5 s), or a held key stutters"),
    "speed": (0.5, "delta of a lower-case motion key, in [0, 1]"),
    "fast_speed": (1.0, "delta of an upper-case (shift) motion key, in [0, 1]"),
}

MOTION_KEYS = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "z": (3, 1.0), "c": (3, -1.0), "t": (4, 1.0), "g": (4, -1.0), "q": (5, 1.0), "e": (5, -1.0),
}
"""Key -> (delta index in x, y, z, roll, pitch, yaw; sign)."""
GRIPPER_KEY = " "
TOGGLE_KEYS = ("i", "\t")
ESC = 0x1B
READ_BYTES = 1024


def make_reader(values: dict) -> "KeyboardReader":
    """A reader from ``PARAMETERS`` values (missing ones take their defaults); ValueError names a
    bad value. Does not open the terminal."""
    v = {name: values.get(name, default) for name, (default, _) in PARAMETERS.items()}
    for name in ("release_s", "repeat_delay_s"):
        if not (isinstance(v[name], (int, float)) and math.isfinite(v[name]) and 0.0 < v[name] <= 10.0):
            raise ValueError(f"keyboard.{name} must be in (0, 10] s, got {v[name]!r}")
    for name in ("speed", "fast_speed"):
        if not (isinstance(v[name], (int, float)) and 0.0 <= v[name] <= 1.0):
            raise ValueError(f"keyboard.{name} must be in [0, 1], got {v[name]!r}")
    if not (isinstance(v["path"], str) and v["path"]):
        raise ValueError(f"keyboard.path must be a terminal device path, got {v['path']!r}")
    return KeyboardReader(v["path"], float(v["release_s"]), float(v["repeat_delay_s"]),
                          float(v["speed"]), float(v["fast_speed"]))


class KeyboardReader(DeviceReader):
    name = "keyboard"

    def __init__(self, path: str = "/dev/tty", release_s: float = 0.25, repeat_delay_s: float = 0.6,
                 speed: float = 0.5, fast_speed: float = 1.0) -> None:
        self.path = path
        self.release_s = release_s
        self.repeat_delay_s = repeat_delay_s
        self.speed = speed
        self.fast_speed = fast_speed
        self._fd: int | None = None
        self._saved: list | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._motion: tuple[str, int, float] | None = None  # (lower-case key, index, signed delta)
        self._held: dict[str, float] = {}  # lower-case key -> release time (monotonic)
        self._gripper_next = GRIPPER_CLOSE
        self._gripper = GRIPPER_STAY
        self._toggle = False

    # ------------------------------------------------------------------ device
    def open(self) -> None:
        self.close()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as exc:
            raise DeviceError(f"keyboard: cannot open terminal {self.path}: {exc.strerror}") from exc
        try:
            if not os.isatty(fd):
                raise DeviceError(f"keyboard: {self.path} is not a terminal")
            saved = termios.tcgetattr(fd)
            mode = termios.tcgetattr(fd)
            mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflag: cbreak; ISIG kept: Ctrl-C works
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSAFLUSH, mode)  # keys typed before the open are dropped
        except termios.error as exc:
            os.close(fd)
            raise DeviceError(f"keyboard: cannot set up terminal {self.path}: {exc}") from exc
        except DeviceError:
            os.close(fd)
            raise
        self._fd, self._saved = fd, saved
        self._reset_state()
        atexit.register(self.close)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        atexit.unregister(self.close)
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)
        except termios.error:
            pass  # the terminal hung up: there are no settings left to restore
        finally:
            os.close(fd)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def read(self, timeout_s: float) -> HumanCommand | None:
        if self._fd is None:
            raise DeviceError(f"keyboard: terminal {self.path} is not open")
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            now = time.monotonic()
            if self._expire(now):
                return self._command(now)
            wait = deadline - now
            if self._held:
                wait = min(wait, min(self._held.values()) - now)
            try:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, wait))
            except (OSError, ValueError) as exc:
                raise DeviceError(f"keyboard: terminal {self.path} failed: {exc}") from exc
            if ready:
                data = self._read_bytes()
                now = time.monotonic()
                released = self._expire(now)
                if self._keys(data, now) or released:
                    return self._command(now)
            elif time.monotonic() >= deadline:
                now = time.monotonic()
                return self._command(now) if self._expire(now) else None

    def _read_bytes(self) -> bytes:
        try:
            data = os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return b""
        except OSError as exc:
            reason = "hung up" if exc.errno == errno.EIO else exc.strerror
            raise DeviceError(f"keyboard: terminal {self.path} {reason}") from exc
        if not data:
            raise DeviceError(f"keyboard: terminal {self.path} hung up (end of input)")
        return data

    # ------------------------------------------------------------------- state
    def _expire(self, now: float) -> bool:
        """Release keys whose repeats stopped; True if anything was released."""
        gone = [key for key, until in self._held.items() if until <= now]
        for key in gone:
            del self._held[key]
            if self._motion is not None and self._motion[0] == key:
                self._motion = None
            if key == GRIPPER_KEY:
                self._gripper = GRIPPER_STAY
        return bool(gone)

    def _keys(self, data: bytes, now: float) -> bool:
        """Apply the key bytes in ``data``; True if any was a key of the map."""
        seen = False
        i = 0
        while i < len(data):
            byte = data[i]
            i += 1
            if byte == ESC:
                i = _skip_escape(data, i)
                continue
            if byte >= 0x80:
                continue
            char = chr(byte)
            key = char.lower()
            repeat = key in self._held
            if key in MOTION_KEYS:
                index, sign = MOTION_KEYS[key]
                delta = sign * (self.fast_speed if char.isupper() else self.speed)
                if self._motion is not None and self._motion[0] != key:
                    self._held.pop(self._motion[0], None)  # the terminal repeats only the newest key
                self._motion = (key, index, delta)
            elif key == GRIPPER_KEY:
                if not repeat:
                    self._gripper = self._gripper_next
                    self._gripper_next = GRIPPER_OPEN if self._gripper == GRIPPER_CLOSE else GRIPPER_CLOSE
            elif key in TOGGLE_KEYS:
                key = "i"  # Tab and i are one key: a repeat of either is not a new press
                repeat = key in self._held
                if not repeat:
                    self._toggle = True
            else:
                continue
            seen = True
            self._held[key] = now + (self.release_s if repeat else max(self.repeat_delay_s, self.release_s))
        return seen

    def _command(self, now: float) -> HumanCommand:
        deltas = np.zeros(6)
        if self._motion is not None:
            deltas[self._motion[1]] = self._motion[2]
        toggle, self._toggle = self._toggle, False
        active = self._motion is not None or GRIPPER_KEY in self._held
        return HumanCommand(deltas, gripper=self._gripper, active=active, stamp=now, toggle_intervention=toggle)


def _skip_escape(data: bytes, i: int) -> int:
    """Index past the escape sequence whose ESC was just before ``i`` (CSI, SS3 or Alt+key)."""
    if i >= len(data):
        return i
    if data[i] == ord("["):
        i += 1
        while i < len(data) and not 0x40 <= data[i] <= 0x7E:
            i += 1
        return i + 1
    if data[i] == ord("O"):
        return i + 2
    return i + 1
