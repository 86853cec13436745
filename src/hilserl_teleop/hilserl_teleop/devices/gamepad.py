"""A gamepad through ``evdev``: sticks, triggers and buttons of ``/dev/input/eventN`` -> ``HumanCommand``.

The device is ``device``: a path (``/dev/input/event5``, ``/dev/input/by-id/...-event-joystick``),
a case-insensitive substring of its name (``Xbox``), or empty for the first device with gamepad
buttons (``BTN_SOUTH``) and a stick (``ABS_X``). ``read`` waits in ``select`` on the device's fd.

Raw axes (what ``axes`` indexes) are the evdev codes in ``raw_axes``, each normalised by its
absinfo min/max to [-1, 1] (sticks, hats), or to [0, 1] for those in ``trigger_axes``. An axis
the pad lacks reads 0; one the mapping uses must be there.

Default mapping, an Xbox-style pad (xpad, xone, xpadneo drivers: sticks ABS_X/ABS_Y and
ABS_RX/ABS_RY, y down positive; triggers ABS_Z/ABS_RZ; D-pad ABS_HAT0X/HAT0Y), the operator
behind the robot facing base +x: base x <- left stick forward (-ABS_Y), base y <- left stick
left (-ABS_X), base z <- right stick forward (-ABS_RY), base yaw <- right stick left (-ABS_RX);
roll and pitch are unmapped (-1) and the triggers and D-pad are listed to be mapped to them if
wanted (e.g. ``axes`` [1, 0, 3, 6, 7, 2] puts the D-pad on roll/pitch). Buttons: A (BTN_SOUTH)
closes the gripper and B (BTN_EAST) opens it (the command repeats the last choice, ``GRIPPER_STAY``
before any), START toggles the take-over once per press. ``active``: a listed axis beyond the
deadband or a mapped button held. Pads on the generic HID driver (some Bluetooth firmwares) put
the right stick on ABS_Z/ABS_RZ and the triggers on ABS_BRAKE/ABS_GAS: set ``raw_axes`` and
``trigger_axes`` accordingly.
"""

from __future__ import annotations

import errno
import select
import time
from collections.abc import Callable, Sequence

import evdev
import numpy as np
from evdev import ecodes

from hilserl_teleop.devices.base import (GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, AxisMapping, DeviceError,
                                         DeviceReader, HumanCommand)

PARAMETERS = {
    "device": ("", "event device path, or a substring of its name (case-insensitive); "
                   "empty: the first device with gamepad buttons and a stick"),
    "raw_axes": (["ABS_X", "ABS_Y", "ABS_RX", "ABS_RY", "ABS_Z", "ABS_RZ", "ABS_HAT0X", "ABS_HAT0Y"],
                 "evdev absolute axes read as raw axes 0, 1, ... (normalised by their absinfo min/max)"),
    "trigger_axes": (["ABS_Z", "ABS_RZ"], "raw axes normalised to [0, 1] (triggers) instead of [-1, 1]"),
    "axes": ([1, 0, 3, -1, -1, 2], "raw axis index (-1: none) read by base x, y, z, roll, pitch, yaw"),
    "signs": ([-1, -1, -1, 1, 1, -1], "sign (+1/-1) of each base-frame delta"),
    "deadband": (0.15, "normalised axis magnitude read as 0 (stick drift)"),
    "scale": ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "gain of each base-frame delta (result clipped to [-1, 1])"),
    "close_button": ("BTN_SOUTH", "evdev key whose press closes the gripper (Xbox A)"),
    "open_button": ("BTN_EAST", "evdev key whose press opens the gripper (Xbox B)"),
    "intervention_button": ("BTN_START", "evdev key whose press toggles the take-over (START; BTN_TR: right shoulder)"),
}
BUTTON_PARAMETERS = ("close_button", "open_button", "intervention_button")


def _code(kind: str, name, parameter: str) -> int:
    table = ecodes.ABS if kind == "ABS" else ecodes.keys
    code = ecodes.ecodes.get(name) if isinstance(name, str) and name.startswith(("ABS_", "BTN_", "KEY_")) else None
    if code is None or code not in table:
        raise ValueError(f"gamepad.{parameter}: {name!r} is not an evdev {kind} code name")
    return code


def _settings(values: dict) -> dict:
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown gamepad parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    settings = {name: default for name, (default, _) in PARAMETERS.items()}
    settings.update(values)
    settings["raw_codes"] = tuple(_code("ABS", name, "raw_axes") for name in settings["raw_axes"])
    settings["trigger_codes"] = frozenset(_code("ABS", name, "trigger_axes") for name in settings["trigger_axes"])
    settings["button_codes"] = tuple(_code("KEY", settings[p], p) for p in BUTTON_PARAMETERS)
    if len(set(settings["button_codes"])) != 3:
        raise ValueError(f"gamepad.{'/'.join(BUTTON_PARAMETERS)} must be three different keys")
    try:
        settings["mapping"] = AxisMapping(axes=tuple(int(a) for a in settings["axes"]),
                                          signs=tuple(float(s) for s in settings["signs"]),
                                          deadband=float(settings["deadband"]),
                                          scale=tuple(float(s) for s in settings["scale"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"gamepad.axes/signs/deadband/scale: {exc}") from exc
    too_far = [a for a in settings["mapping"].axes if a >= len(settings["raw_codes"])]
    if too_far:
        raise ValueError(f"gamepad.axes: raw axes {too_far} not in gamepad.raw_axes ({len(settings['raw_codes'])} listed)")
    return settings


def _looks_like_gamepad(source) -> bool:
    caps = source.capabilities(absinfo=False)
    return ecodes.BTN_SOUTH in caps.get(ecodes.EV_KEY, ()) and ecodes.ABS_X in caps.get(ecodes.EV_ABS, ())


class GamepadReader(DeviceReader):
    name = "gamepad"

    def __init__(self, values: dict | None = None, open_device: Callable[[str], object] = evdev.InputDevice,
                 list_devices: Callable[[], Sequence[str]] = evdev.list_devices) -> None:
        """``open_device(path)``: an ``evdev.InputDevice``, or in tests an object with its
        ``fileno``, ``read``, ``absinfo``, ``capabilities``, ``active_keys``, ``name``, ``path``
        and ``close``; ``list_devices``: the event device paths (``evdev.list_devices``)."""
        self._settings = _settings(dict(values or {}))
        self._mapping: AxisMapping = self._settings["mapping"]
        self._open_device = open_device
        self._list_devices = list_devices
        self._source = None
        self._label = f"{self._settings['device'] or 'gamepad'}"

    # -- device ---------------------------------------------------------------------------------

    def _open_path(self, path: str):
        try:
            return self._open_device(path)
        except FileNotFoundError as exc:
            raise DeviceError(f"gamepad {path!r}: no such device (unplugged?)") from exc
        except PermissionError as exc:
            raise DeviceError(f"gamepad {path!r}: permission denied (is the user in the 'input' group?)") from exc
        except OSError as exc:
            raise DeviceError(f"gamepad {path!r}: cannot open it: {exc}") from exc

    def _find(self):
        wanted = self._settings["device"]
        if wanted.startswith("/"):
            return self._open_path(wanted)
        seen, refused = [], []
        for path in sorted(self._list_devices()):
            try:
                source = self._open_path(path)
            except DeviceError as exc:
                refused.append(str(exc))
                continue
            matches = wanted.lower() in source.name.lower() if wanted else _looks_like_gamepad(source)
            if matches:
                return source
            seen.append(f"{path} {source.name!r}")
            source.close()
        what = f"name containing {wanted!r}" if wanted else "gamepad buttons and a stick"
        raise DeviceError(f"gamepad: no event device with {what} (gamepad.device); seen: {seen or 'none'}"
                          + (f"; refused: {refused}" if refused else ""))

    def open(self) -> None:
        self.close()
        source = self._find()
        self._label = f"{source.path!r} ({source.name})"
        try:
            self._ranges = self._check(source)
            self._resync(source)
        except BaseException:
            source.close()
            raise
        self._source = source
        self._gripper = GRIPPER_STAY
        self._dropped = False

    def _check(self, source) -> dict[int, tuple[int, int, bool]]:
        """absinfo min/max (and one-sidedness) per listed axis the device has; a DeviceError
        names the mapped axes and buttons it lacks."""
        caps = source.capabilities(absinfo=False)
        has_abs, has_keys = set(caps.get(ecodes.EV_ABS, ())), set(caps.get(ecodes.EV_KEY, ()))
        raw_codes = self._settings["raw_codes"]
        mapped = {raw_codes[a] for a in self._mapping.axes if a >= 0}
        missing = [ecodes.ABS[c] for c in sorted(mapped - has_abs)]
        missing += [self._settings[p] for p, c in zip(BUTTON_PARAMETERS, self._settings["button_codes"])
                    if c not in has_keys]
        if missing:
            raise DeviceError(f"gamepad {self._label}: lacks {missing} (gamepad.raw_axes/axes or *_button)")
        ranges = {}
        for code in set(raw_codes) & has_abs:
            info = source.absinfo(code)
            if info.max <= info.min:
                raise DeviceError(f"gamepad {self._label}: {ecodes.ABS[code]} has an empty range "
                                  f"[{info.min}, {info.max}]")
            ranges[code] = (info.min, info.max, code in self._settings["trigger_codes"])
        return ranges

    def _resync(self, source) -> None:
        """Axis values and held buttons as the device reports them now (at open, after SYN_DROPPED)."""
        self._values = {code: source.absinfo(code).value for code in self._ranges}
        self._held = set(source.active_keys()) & set(self._settings["button_codes"])

    def close(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            source.close()

    # -- reading --------------------------------------------------------------------------------

    def _normalised(self) -> np.ndarray:
        raw = np.zeros(len(self._settings["raw_codes"]))
        for i, code in enumerate(self._settings["raw_codes"]):
            if code in self._ranges:
                low, high, one_sided = self._ranges[code]
                fraction = (min(max(self._values[code], low), high) - low) / (high - low)
                raw[i] = fraction if one_sided else 2.0 * fraction - 1.0
        return raw

    def _apply(self, events) -> bool:
        """Fold events into the state; True when the intervention button was pressed."""
        close_code, open_code, toggle_code = self._settings["button_codes"]
        pressed = False
        for event in events:
            if event.type == ecodes.EV_SYN:
                if event.code == ecodes.SYN_DROPPED:
                    self._dropped = True  # events until the next SYN_REPORT are incomplete
                elif event.code == ecodes.SYN_REPORT and self._dropped:
                    self._dropped = False
                    self._resync(self._source)
            elif self._dropped:
                continue
            elif event.type == ecodes.EV_ABS and event.code in self._values:
                self._values[event.code] = event.value
            elif event.type == ecodes.EV_KEY and event.code in (close_code, open_code, toggle_code):
                if event.value == 0:
                    self._held.discard(event.code)
                    continue
                if event.value == 1 and event.code not in self._held:  # 2: autorepeat of a held key
                    pressed |= event.code == toggle_code
                    if event.code != toggle_code:
                        self._gripper = GRIPPER_CLOSE if event.code == close_code else GRIPPER_OPEN
                self._held.add(event.code)
        return pressed

    def read(self, timeout_s: float) -> HumanCommand | None:
        source = self._source
        if source is None:
            raise DeviceError(f"gamepad {self._label}: not open")
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([source.fileno()], [], [], remaining)
            events = []
            if ready:
                try:
                    events = list(source.read())
                except BlockingIOError:
                    pass  # woken without an event
                except OSError as exc:
                    label = self._label
                    self.close()
                    gone = "unplugged" if exc.errno == errno.ENODEV else "read failed"
                    raise DeviceError(f"gamepad {label}: {gone} ({exc})") from exc
            if events:
                stamp = time.monotonic()
                toggle = self._apply(events)
                raw = self._normalised()
                active = bool(np.any(np.abs(raw) > self._mapping.deadband)) or bool(self._held)
                return HumanCommand(deltas=self._mapping.apply(raw), gripper=self._gripper, active=active,
                                    stamp=stamp, toggle_intervention=toggle)
            if remaining <= 0.0:
                return None


def make_reader(values: dict) -> GamepadReader:
    return GamepadReader(values)
