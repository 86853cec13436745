"""A 3Dconnexion SpaceMouse through ``pyspacemouse``: six axes and two buttons -> ``HumanCommand``.

pyspacemouse decodes the HID reports (its device table, ``devices.toml``, and
``SpaceMouseDevice._process``); this module only adds what it lacks: a read that blocks at most
``timeout_s`` (hidapi's ``hid_read_timeout``, which polls the hidraw fd: no busy spin), the
mapping to the robot base frame, and the button semantics.

Raw axes (what ``axes`` indexes): pyspacemouse's state in its ``HID_Z_UP`` convention, divided by
the device's full scale (350 counts), seen from the operator: 0 ``x`` (cap pushed right),
1 ``y`` (pushed away), 2 ``z`` (lifted), 3 ``roll`` (about the right-pointing axis: front edge
of the cap up), 4 ``pitch`` (about the away-pointing axis: tilted right), 5 ``yaw``
(twisted counter-clockwise seen from above).

Default mapping (SpaceMouse Compact / Wireless, and every model with the same table): the
operator stands behind the robot, facing the way the base's +x points, so
base x <- cap away (raw 1), base y <- cap left (-raw 0), base z <- cap lifted (raw 2),
base roll (about +x) <- cap tilted right (raw 4), base pitch (about +y) <- cap tilted away
(-raw 3), base yaw <- cap twisted counter-clockwise (raw 5): ``axes`` (1, 0, 2, 4, 3, 5),
``signs`` (1, -1, 1, 1, -1, 1). An operator facing the robot negates x, y, roll and pitch.

Buttons: the ``gripper_button`` (LEFT) toggles close/open by default (``gripper_mode``
``toggle``: the first press closes, the next opens, and the command repeats the last choice;
before any press it is ``GRIPPER_STAY``); ``hold`` closes while held and opens on release. The
``intervention_button`` (RIGHT) sets ``toggle_intervention`` once per press. ``active``: a raw
axis beyond the deadband or either button held.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from hilserl_teleop.devices.base import (GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, AxisMapping, DeviceError,
                                         DeviceReader, HumanCommand)

GRIPPER_MODES = ("toggle", "hold")
MAX_REPORTS_PER_READ = 64
"""Reports already queued are drained into one command, at most this many per ``read``."""

PARAMETERS = {
    "device": ("", "pyspacemouse model name (e.g. SpaceMouseCompact, SpaceMouseWireless); "
                   "empty: the first supported SpaceMouse connected"),
    "axes": ([1, 0, 2, 4, 3, 5], "raw axis (0 x right, 1 y away, 2 z up, 3 roll, 4 pitch, 5 yaw; -1: none) "
                                 "read by base x, y, z, roll, pitch, yaw"),
    "signs": ([1, -1, 1, 1, -1, 1], "sign (+1/-1) of each base-frame delta"),
    "deadband": (0.1, "raw axis magnitude (fraction of full scale) read as 0"),
    "scale": ([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], "gain of each base-frame delta (result clipped to [-1, 1])"),
    "gripper_mode": ("toggle", "gripper button: 'toggle' (press closes, next press opens) or "
                               "'hold' (closed while held, open on release)"),
    "gripper_button": ("LEFT", "pyspacemouse button name that drives the gripper"),
    "intervention_button": ("RIGHT", "pyspacemouse button name whose press toggles the take-over"),
}


def _settings(values: dict) -> dict:
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown spacemouse parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
    settings = {name: default for name, (default, _) in PARAMETERS.items()}
    settings.update(values)
    if settings["gripper_mode"] not in GRIPPER_MODES:
        raise ValueError(f"spacemouse.gripper_mode must be one of {GRIPPER_MODES}, got {settings['gripper_mode']!r}")
    for name in ("gripper_button", "intervention_button"):
        if not isinstance(settings[name], str) or not settings[name]:
            raise ValueError(f"spacemouse.{name} must be a button name, got {settings[name]!r}")
    if settings["gripper_button"] == settings["intervention_button"]:
        raise ValueError(f"spacemouse.gripper_button and spacemouse.intervention_button are both "
                         f"{settings['gripper_button']!r}")
    return settings


def axis_mapping(settings: dict, prefix: str = "spacemouse") -> AxisMapping:
    """``AxisMapping`` from the ``axes``/``signs``/``deadband``/``scale`` parameters; a ValueError
    names the parameters."""
    try:
        return AxisMapping(axes=tuple(int(a) for a in settings["axes"]),
                           signs=tuple(float(s) for s in settings["signs"]),
                           deadband=float(settings["deadband"]),
                           scale=tuple(float(s) for s in settings["scale"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{prefix}.axes/signs/deadband/scale: {exc}") from exc


def _enumerate_hid() -> list:
    from easyhid import Enumeration  # imported when used: other devices' nodes need no hidapi

    return Enumeration().find()


class _TimedHID:
    """The HID handle as ``SpaceMouseDevice`` sees it: its ``read(size)`` waits at most
    ``timeout_ms`` (``SpaceMouseDevice.read`` passes no timeout); notes whether a report came."""

    def __init__(self, hid) -> None:
        self.hid = hid
        self.timeout_ms = 0
        self.got_report = False

    def read(self, size: int):
        data = self.hid.read(size, self.timeout_ms)
        self.got_report = bool(data)
        return data

    def __getattr__(self, name: str):  # open, close, product_string, serial_number, ...
        return getattr(self.hid, name)


class SpaceMouseReader(DeviceReader):
    name = "spacemouse"

    def __init__(self, values: dict | None = None, hid_devices: Callable[[], Sequence] = _enumerate_hid) -> None:
        """``hid_devices``: the connected HID interfaces (easyhid ``HIDDevice``-like: ``vendor_id``,
        ``product_id``, ``path``, ``open()``, ``read(size, timeout_ms)``, ``close()``); tests
        replace it, and with it only the physical device."""
        self._settings = _settings(dict(values or {}))
        self._mapping = axis_mapping(self._settings)
        self._hid_devices = hid_devices
        self._mouse = None
        self._handle: _TimedHID | None = None
        self._label = self._settings["device"] or "SpaceMouse"
        self._reset_state()

    def _reset_state(self) -> None:
        self._buttons_down: tuple[bool, bool] = (False, False)
        self._gripper = GRIPPER_STAY

    # -- device ---------------------------------------------------------------------------------

    def _find(self):
        import pyspacemouse

        specs = pyspacemouse.get_device_specs()
        wanted = self._settings["device"]
        if wanted and wanted not in specs:
            raise DeviceError(f"spacemouse: unknown model {wanted!r} (spacemouse.device); known: {sorted(specs)}")
        candidates = {wanted: specs[wanted]} if wanted else specs
        connected = list(self._hid_devices())  # a missing libhidapi-hidraw0 fails the import: loud, no retry
        for hid in connected:
            for model, spec in candidates.items():
                if (hid.vendor_id, hid.product_id) == (spec.vendor_id, spec.product_id):
                    return model, spec, hid
        raise DeviceError(f"spacemouse: no {wanted or 'supported SpaceMouse'} connected "
                          f"({len(connected)} HID device(s) found; plugged in, udev rule for hidraw?)")

    def open(self) -> None:
        from pyspacemouse import AxisConvention, SpaceMouseDevice, apply_axis_convention

        self.close()
        model, spec, hid = self._find()
        self._label = f"{model} at {hid.path!r}" if getattr(hid, "path", None) else model
        spec = apply_axis_convention(spec, AxisConvention.HID_Z_UP)
        buttons = list(spec.button_names)
        for parameter in ("gripper_button", "intervention_button"):
            if self._settings[parameter] not in buttons:
                raise DeviceError(f"spacemouse {self._label}: has no button {self._settings[parameter]!r} "
                                  f"(spacemouse.{parameter}); its buttons: {buttons}")
        self._button_index = (buttons.index(self._settings["gripper_button"]),
                              buttons.index(self._settings["intervention_button"]))
        handle = _TimedHID(hid)
        mouse = SpaceMouseDevice(info=spec, device=handle)
        try:
            mouse.open()
        except (RuntimeError, OSError) as exc:
            raise DeviceError(f"spacemouse {self._label}: cannot open it (permissions of its hidraw node?): "
                              f"{exc.__cause__ or exc}") from exc
        self._mouse, self._handle = mouse, handle
        self._reset_state()

    def close(self) -> None:
        mouse, self._mouse, self._handle = self._mouse, None, None
        if mouse is not None:
            mouse.close()

    # -- reading --------------------------------------------------------------------------------

    def _read_report(self, wait_ms: int):
        """pyspacemouse's state after one report (decoded by ``SpaceMouseDevice``), or None when
        none came within ``wait_ms``."""
        from easyhid import HIDException

        self._handle.timeout_ms = wait_ms
        try:
            state = self._mouse.read()
        except (HIDException, OSError) as exc:
            label = self._label
            self.close()
            raise DeviceError(f"spacemouse {label}: read failed, unplugged? ({exc})") from exc
        return state if self._handle.got_report else None

    def _on_buttons(self, buttons: Sequence[int], toggle: bool) -> bool:
        """Apply one report's buttons; True when the intervention button was pressed in it."""
        gripper_down, intervention_down = (bool(buttons[i]) for i in self._button_index)
        was_gripper, was_intervention = self._buttons_down
        if self._settings["gripper_mode"] == "hold":
            if gripper_down != was_gripper:
                self._gripper = GRIPPER_CLOSE if gripper_down else GRIPPER_OPEN
        elif gripper_down and not was_gripper:
            self._gripper = GRIPPER_OPEN if self._gripper == GRIPPER_CLOSE else GRIPPER_CLOSE
        self._buttons_down = (gripper_down, intervention_down)
        return toggle or (intervention_down and not was_intervention)

    def read(self, timeout_s: float) -> HumanCommand | None:
        if self._mouse is None:
            raise DeviceError(f"spacemouse {self._label}: not open")
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        stamp, toggle, state = None, False, None
        for _ in range(MAX_REPORTS_PER_READ):
            # The first report: wait for it (up to the deadline); then only drain what is queued.
            wait_ms = 0 if stamp is not None else max(0, math.ceil((deadline - time.monotonic()) * 1000.0))
            report_state = self._read_report(wait_ms)
            if report_state is None:
                if stamp is not None or time.monotonic() >= deadline:
                    break
                continue  # hidapi woke early: wait the rest
            stamp, state = time.monotonic(), report_state
            toggle = self._on_buttons(state.buttons, toggle)
        if stamp is None:
            return None
        raw = np.array([state.x, state.y, state.z, state.roll, state.pitch, state.yaw], dtype=float)
        moving = bool(np.any(np.abs(np.clip(raw, -1.0, 1.0)) > self._mapping.deadband))
        return HumanCommand(deltas=self._mapping.apply(raw), gripper=self._gripper,
                            active=moving or any(self._buttons_down), stamp=stamp, toggle_intervention=toggle)


def make_reader(values: dict) -> SpaceMouseReader:
    return SpaceMouseReader(values)
