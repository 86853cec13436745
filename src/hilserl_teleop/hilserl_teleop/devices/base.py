"""What every human input device gives the graph, without ROS.

A ``DeviceReader`` opens one device, and ``read(timeout_s)`` waits (at most ``timeout_s``) for
its next input and returns the person's current command, ``HumanCommand``: six end-effector
deltas in the robot base frame, normalised to [-1, 1] (the safety limiter scales them by its
per-step limits), a gripper command, whether the person is driving now (``active``: touching
the device, a key held, the leader arm moved), an edge request to toggle the take-over, and the
``time.monotonic()`` of the device event it comes from (for latency measures). A device that is
unplugged, or whose reader died, raises ``DeviceError`` naming the device; ``open`` raises it
when the device is not there (the node then retries: hot-plug). ``follow`` hands a reader the
follower arm's state (a leader arm tracks it while the policy acts).

Each device module (``spacemouse``, ``keyboard``, ``gamepad``, ``leader_arm``) exposes
``PARAMETERS`` (``name: (default, description)``: what the human-input node declares as
``<device>.<name>``) and ``make_reader(values: dict) -> DeviceReader``.

``AxisMapping`` turns a device's raw axes into deltas: per output axis the raw axis it reads and
its sign, a deadband (raw magnitudes below it are 0, the rest rescaled so the output starts at 0
past the deadband), and a scale; the result is clipped to [-1, 1].
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Sequence

import numpy as np

GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN = -1, 0, 1
DELTA_NAMES = ("x", "y", "z", "roll", "pitch", "yaw")


class DeviceError(RuntimeError):
    """A device is missing, unplugged or its reader died; the message names the device."""


@dataclasses.dataclass(frozen=True)
class HumanCommand:
    deltas: np.ndarray
    """Six normalised end-effector deltas (x, y, z, roll, pitch, yaw), base frame, in [-1, 1]."""
    gripper: int = GRIPPER_STAY
    active: bool = False
    """The person is driving now (touching the device, holding a key, moving the leader)."""
    stamp: float = 0.0
    """``time.monotonic()`` of the device event this command reflects."""
    toggle_intervention: bool = False
    """A button press asking to take over / hand back (an edge: once per press)."""

    def __post_init__(self) -> None:
        deltas = np.asarray(self.deltas, dtype=float).reshape(-1)
        if deltas.shape != (6,) or not np.all(np.isfinite(deltas)):
            raise ValueError(f"HumanCommand.deltas must be 6 finite numbers, got {self.deltas!r}")
        object.__setattr__(self, "deltas", np.clip(deltas, -1.0, 1.0))
        if self.gripper not in (GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN):
            raise ValueError(f"HumanCommand.gripper must be -1, 0 or 1, got {self.gripper!r}")


@dataclasses.dataclass(frozen=True)
class AxisMapping:
    """Raw device axes -> the six deltas. ``axes[i]``: the raw axis output i reads (-1: none);
    ``signs[i]``: +1 / -1; ``deadband``: raw magnitude read as 0; ``scale``: gain per output."""

    axes: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    deadband: float = 0.05
    scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("axes", "signs", "scale"):
            value = getattr(self, name)
            if len(value) != 6:
                raise ValueError(f"AxisMapping.{name} needs 6 entries ({', '.join(DELTA_NAMES)}), got {list(value)}")
            object.__setattr__(self, name, tuple(value))
        if any(int(a) != a or a < -1 for a in self.axes):
            raise ValueError(f"AxisMapping.axes must be raw axis indices >= 0 or -1 (none), got {list(self.axes)}")
        if any(s not in (1, -1, 1.0, -1.0) for s in self.signs):
            raise ValueError(f"AxisMapping.signs must be +1 or -1, got {list(self.signs)}")
        if not (math.isfinite(self.deadband) and 0.0 <= self.deadband < 1.0):
            raise ValueError(f"AxisMapping.deadband must be in [0, 1), got {self.deadband!r}")
        if any(not (math.isfinite(s) and s >= 0.0) for s in self.scale):
            raise ValueError(f"AxisMapping.scale must be finite and >= 0, got {list(self.scale)}")

    def apply(self, raw: Sequence[float]) -> np.ndarray:
        """Deltas in [-1, 1] from raw axes in [-1, 1] (a missing axis reads 0)."""
        raw = np.asarray(raw, dtype=float).reshape(-1)
        out = np.zeros(6)
        for i, (axis, sign, gain) in enumerate(zip(self.axes, self.signs, self.scale)):
            if axis < 0 or axis >= raw.size or not math.isfinite(raw[axis]):
                continue
            value = float(np.clip(raw[axis], -1.0, 1.0))
            magnitude = max(0.0, abs(value) - self.deadband) / (1.0 - self.deadband)
            out[i] = sign * gain * math.copysign(magnitude, value)
        return np.clip(out, -1.0, 1.0)


class DeviceReader(abc.ABC):
    """One human input device. Not thread-safe: one caller."""

    name: str = ""
    """The device's name in ``INPUT_SOURCES`` (the human action's ``header.frame_id``)."""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device; ``DeviceError`` naming it if it is not there."""

    @abc.abstractmethod
    def read(self, timeout_s: float) -> HumanCommand | None:
        """Wait at most ``timeout_s`` for input; the current command, or None if nothing new.
        ``DeviceError`` when the device is gone (then ``close`` and ``open`` again)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    def follow(self, joint_names: Sequence[str], joint_positions: Sequence[float],
               ee_position: Sequence[float] | None = None) -> None:
        """The follower's latest state (``joint_states``, ``ee_pose``); a leader arm uses it,
        other devices ignore it."""

    def __enter__(self) -> "DeviceReader":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
