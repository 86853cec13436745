"""The servo bus of one arm, without ROS: calibrated sync reads and writes on the vendor SDKs.

- ``MotorBus`` (abstract) and its two implementations, ``DynamixelBus`` (Protocol 2.0,
  ``dynamixel_sdk``) and ``FeetechBus`` (STS, ``scservo_sdk``), drive every motor of one
  arm. The motors, their model and their calibration come from an ``ArmCalibration``.
- ``JointCalibration`` / ``ArmCalibration``: per joint the motor ID, the homing offset
  (the raw reading in ticks at the joint's zero), the direction (+1 / -1) and the
  allowed range in raw ticks; saved and loaded as YAML (``yaml.safe_load``) and
  validated, every error naming the joint (and the file).

What the bus guarantees:

- ``connect()`` opens the port, sets the baud rate and pings every configured motor;
  it raises ``MotorBusError`` naming each motor that did not answer or answered with
  another model number (and the model found), and leaves the port closed then.
- ``read_state()`` sends ONE sync read per try, covering Present Position, the velocity
  register and the effort register of every motor, and converts once: radians, rad/s,
  and amperes (XL330-M288 Present Current) or normalised load in [-1, 1] (XL430-W250
  and STS3215 Present Load), all in the joint frame (direction and homing offset
  applied). A sync read some motors did not answer is retried for those motors while
  tries (``read_tries``) and the call's ``deadline_s`` allow; a motor still missing
  keeps its last good values and the state says so (``stale=True``, ``failed_ids``,
  ``reasons``, ``fresh``); a value is never passed on as fresh when it is not. A motor
  never read is NaN. A motor that misses ``max_missed_reads`` consecutive
  ``read_state`` calls raises ``MotorBusError`` naming it.
- ``write_goals(radians)`` sends ONE sync write of Goal Position for every motor, the
  goal converted to ticks and clipped to the joint's calibrated range.
- ``set_torque(enabled)`` writes Torque Enable to every motor, one by one, even after a
  failure, then raises ``MotorBusError`` naming the motors that failed.
- ``close()`` closes the port; safe to call twice; it does not change torque.

Register addresses, sizes and sign conventions (two's complement for Dynamixel,
sign-magnitude for STS) come from ``servo_tables.DATA`` (``ModelSpec``); the unit scales
the specs do not carry (ticks per revolution, effort scale) are in ``UNITS``, keyed by
the same model names.

Packet timeout: both SDKs re-arm their status-packet timeout before every receive with
``PortHandler.setPacketTimeout(packet_length)``, computed from the module global
``LATENCY_TIMER`` (16 ms, for an FTDI adapter). ``setPacketTimeoutMillis`` alone would
be overwritten by the next SDK call, so the buses open the port through a ``PortHandler``
subclass whose ``setPacketTimeout`` uses the bus's ``packet_timeout_s`` (plus the
transmission time of the expected bytes) through ``setPacketTimeoutMillis``: per bus,
no global patched.

Not done here: the guided calibration procedure, writing the calibration into the
motors' own registers (Homing Offset, position limits), operating modes other than
position control, reboot after a hardware error (the state only reports it in
``error_ids``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
import select
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hilserl_drivers.servo_tables import DATA, ModelSpec, decode_value, encode_value, model_spec


class MotorBusError(RuntimeError):
    """A bus failure that names the motors (IDs) concerned."""


class CalibrationError(ValueError):
    """An invalid calibration; the message names the joint (and the file)."""


# ------------------------------------------------------------------------ units
@dataclasses.dataclass(frozen=True)
class ModelUnits:
    """What ``ModelSpec`` does not carry: the scales from raw register values to SI."""

    ticks_per_rev: int
    """Position ticks per revolution (4096: 0.088 deg per tick)."""
    effort_scale: float
    """Joint effort per LSB of the effort register."""
    effort_unit: str
    """``"A"`` (current) or ``"load"`` (fraction of the maximum torque, -1..1)."""


UNITS: dict[str, ModelUnits] = {
    # XL330-M288 Present Current: 1 mA per LSB (ROBOTIS e-manual).
    "xl330-m288": ModelUnits(ticks_per_rev=4096, effort_scale=0.001, effort_unit="A"),
    # XL430-W250 Present Load: 0.1 % of the maximum torque per LSB (ROBOTIS e-manual).
    "xl430-w250": ModelUnits(ticks_per_rev=4096, effort_scale=0.001, effort_unit="load"),
    # STS3215 Present Load: 0.1 % per LSB (Feetech SMS/STS memory table).
    "sts3215": ModelUnits(ticks_per_rev=4096, effort_scale=0.001, effort_unit="load"),
}
"""Unit scales per model, keyed like ``servo_tables.DATA``."""

_POSITION, _GOAL, _TORQUE = "Present Position", "Goal Position", "Torque Enable"


# ------------------------------------------------------------------ calibration
_JOINT_KEYS = ("name", "id", "homing_offset", "direction", "min_ticks", "max_ticks")


@dataclasses.dataclass(frozen=True)
class JointCalibration:
    """One joint: its motor and the map between raw ticks and joint radians.

    ``radians = direction * (ticks - homing_offset) * 2 pi / ticks_per_rev``; goals are
    clipped to ``min_ticks`` .. ``max_ticks`` (raw ticks). The offset is applied here,
    in software; the motor's own Homing Offset register is left as it is.
    """

    name: str
    id: int
    homing_offset: int
    """Raw Present Position (ticks) at the joint's zero."""
    direction: int
    """+1: joint and motor turn the same way; -1: opposite."""
    min_ticks: int
    max_ticks: int

    def validate(self, ticks_per_rev: int) -> None:
        """Raise ``CalibrationError`` naming this joint if a field is out of range."""
        where = f"joint {self.name!r}"
        for key in _JOINT_KEYS[1:]:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise CalibrationError(f"{where}: {key} must be an integer, got {value!r}")
        if not 0 <= self.id <= 252:
            raise CalibrationError(f"{where}: id must be in 0..252, got {self.id}")
        if self.direction not in (1, -1):
            raise CalibrationError(f"{where}: direction must be 1 or -1, got {self.direction}")
        top = ticks_per_rev - 1
        for key in ("homing_offset", "min_ticks", "max_ticks"):
            if not 0 <= getattr(self, key) <= top:
                raise CalibrationError(f"{where}: {key} must be in 0..{top} ticks, got {getattr(self, key)}")
        if self.min_ticks >= self.max_ticks:
            raise CalibrationError(f"{where}: min_ticks ({self.min_ticks}) must be below max_ticks ({self.max_ticks})")


@dataclasses.dataclass(frozen=True)
class ArmCalibration:
    """The servo model of an arm and the calibration of each of its joints (in bus order)."""

    model: str
    """A ``servo_tables.DATA`` name (an alias such as ``"sts"`` is stored as the full name)."""
    joints: tuple[JointCalibration, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "joints", tuple(self.joints))
        self.validate()
        object.__setattr__(self, "model", model_spec(self.model).name)  # an alias such as "xl330" -> "xl330-m288"

    @property
    def spec(self) -> ModelSpec:
        return model_spec(self.model)

    @property
    def units(self) -> ModelUnits:
        return UNITS[self.spec.name]

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(j.id for j in self.joints)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    def joint_of(self, motor_id: int) -> JointCalibration:
        for joint in self.joints:
            if joint.id == motor_id:
                return joint
        raise KeyError(f"no joint with motor ID {motor_id}; IDs: {list(self.ids)}")

    def validate(self) -> None:
        """Raise ``CalibrationError`` naming the joint at fault."""
        try:
            spec = model_spec(self.model)
        except ValueError as exc:
            raise CalibrationError(f"model: {exc}") from None
        if spec.name not in UNITS:
            raise CalibrationError(f"model {spec.name!r} has no unit scales in motor_bus.UNITS")
        if not self.joints:
            raise CalibrationError("joints: at least one joint is needed")
        seen_names: set[str] = set()
        seen_ids: dict[int, str] = {}
        for joint in self.joints:
            if not isinstance(joint.name, str) or not joint.name:
                raise CalibrationError(f"joint {joint.name!r}: name must be a non-empty string")
            if joint.name in seen_names:
                raise CalibrationError(f"joint {joint.name!r}: name used twice")
            seen_names.add(joint.name)
            joint.validate(UNITS[spec.name].ticks_per_rev)
            if joint.id in seen_ids:
                raise CalibrationError(f"joint {joint.name!r}: motor ID {joint.id} already used by joint "
                                       f"{seen_ids[joint.id]!r}")
            seen_ids[joint.id] = joint.name

    # -------------------------------------------------------------- conversions
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, float]:
        offset = np.array([j.homing_offset for j in self.joints], dtype=float)
        direction = np.array([j.direction for j in self.joints], dtype=float)
        return offset, direction, 2.0 * math.pi / self.units.ticks_per_rev

    def ticks_to_radians(self, ticks: Sequence[float]) -> np.ndarray:
        offset, direction, rad_per_tick = self._arrays()
        return direction * (np.asarray(ticks, dtype=float) - offset) * rad_per_tick

    def radians_to_ticks(self, radians: Sequence[float]) -> np.ndarray:
        """Raw ticks for joint ``radians`` (float, not clipped, not rounded)."""
        offset, direction, rad_per_tick = self._arrays()
        return offset + direction * np.asarray(radians, dtype=float) / rad_per_tick

    def clip_ticks(self, ticks: Sequence[float]) -> np.ndarray:
        low = np.array([j.min_ticks for j in self.joints], dtype=float)
        high = np.array([j.max_ticks for j in self.joints], dtype=float)
        return np.clip(np.asarray(ticks, dtype=float), low, high)

    # ---------------------------------------------------------------------- YAML
    def to_dict(self) -> dict[str, Any]:
        return {"model": self.spec.name,
                "joints": [{key: getattr(j, key) for key in _JOINT_KEYS} for j in self.joints]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> "ArmCalibration":
        """Build and validate; ``CalibrationError`` names ``source`` and the joint."""
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{source}: expected a mapping with 'model' and 'joints', got {type(data).__name__}")
        unknown = set(data) - {"model", "joints"}
        if unknown or "model" not in data or "joints" not in data:
            raise CalibrationError(f"{source}: expected exactly the keys 'model' and 'joints', got {sorted(data)}")
        if not isinstance(data["model"], str):
            raise CalibrationError(f"{source}: model must be a string, got {data['model']!r}")
        if not isinstance(data["joints"], list):
            raise CalibrationError(f"{source}: joints must be a list, got {type(data['joints']).__name__}")
        joints = []
        for index, item in enumerate(data["joints"]):
            name = item.get("name", f"#{index}") if isinstance(item, Mapping) else f"#{index}"
            if not isinstance(item, Mapping):
                raise CalibrationError(f"{source}: joint {name}: expected a mapping, got {item!r}")
            keys = set(item)
            if keys != set(_JOINT_KEYS):
                missing, extra = sorted(set(_JOINT_KEYS) - keys), sorted(keys - set(_JOINT_KEYS))
                raise CalibrationError(f"{source}: joint {name!r}: missing keys {missing}, unknown keys {extra}")
            joints.append(JointCalibration(**{key: item[key] for key in _JOINT_KEYS}))
        try:
            return cls(model=data["model"], joints=tuple(joints))
        except CalibrationError as exc:
            raise CalibrationError(f"{source}: {exc}") from None

    def save(self, path: str | os.PathLike) -> None:
        import yaml

        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ArmCalibration":
        import yaml

        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as exc:
                raise CalibrationError(f"{path}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=str(path))


# ------------------------------------------------------------------------- state
@dataclasses.dataclass(frozen=True)
class BusState:
    """One read of every motor, in the calibration's joint order and joint frame."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    position: np.ndarray
    """rad."""
    velocity: np.ndarray
    """rad/s."""
    effort: np.ndarray
    """A (``effort_unit == "A"``) or fraction of the maximum torque (``"load"``)."""
    effort_unit: str
    stamp: float
    """``time.monotonic()`` when the read ended."""
    stale: bool
    """True if any motor's values are not from this read."""
    failed_ids: tuple[int, ...] = ()
    """Motors that did not answer this read (their values are the last good ones, or NaN)."""
    reasons: Mapping[int, str] = dataclasses.field(default_factory=dict)
    """Why each failed motor failed."""
    fresh: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per motor: read now."""
    error_ids: tuple[int, ...] = ()
    """Motors whose status packet flagged a hardware error (Dynamixel alert bit, Feetech error bits)."""

    def raise_on_hardware_error(self) -> None:
        """``MotorBusError`` naming every motor whose status flags a hardware error (overload,
        overheating, input voltage: the servo's own protection), if any."""
        if self.error_ids:
            raise MotorBusError("hardware error reported by " + ", ".join(
                f"motor {i} (joint {self.names[self.ids.index(i)]!r})" for i in self.error_ids)
                + " (overload, overheating or input voltage): check the arm, then power-cycle the motor")


# ----------------------------------------------------------------------- the bus
class MotorBus(abc.ABC):
    """The motors of one arm on one serial bus. See the module docstring for the guarantees."""

    protocol: str = ""

    def __init__(self, port: str, calibration: ArmCalibration, *, baud_rate: int = 1_000_000,
                 packet_timeout_s: float = 0.05, read_tries: int = 2, max_missed_reads: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``port``: serial device; ``packet_timeout_s``: how long to wait for a status packet
        beyond its transmission time; ``read_tries``: sync reads per ``read_state`` at most;
        ``max_missed_reads``: consecutive failed ``read_state`` calls of one motor before
        ``MotorBusError``."""
        if calibration.spec.protocol != self.protocol:
            raise ValueError(f"{type(self).__name__} speaks {self.protocol}; the calibration's model "
                             f"{calibration.spec.name} is a {calibration.spec.protocol} servo")
        if not (math.isfinite(packet_timeout_s) and packet_timeout_s > 0):
            raise ValueError(f"packet_timeout_s must be > 0, got {packet_timeout_s!r}")
        if read_tries < 1:
            raise ValueError(f"read_tries must be >= 1, got {read_tries}")
        if max_missed_reads < 1:
            raise ValueError(f"max_missed_reads must be >= 1, got {max_missed_reads}")
        self.port_name = port
        self.calibration = calibration
        self.baud_rate = int(baud_rate)
        self.packet_timeout_s = float(packet_timeout_s)
        self.read_tries = int(read_tries)
        self.max_missed_reads = int(max_missed_reads)
        self._clock = clock
        self.spec = calibration.spec
        self.units = calibration.units
        self.ids = calibration.ids
        regs = [_POSITION, self.spec.velocity_register, self.spec.effort_register]
        spans = [self.spec.address(r) for r in regs]
        self._read_start = min(a for a, _ in spans)
        self._read_length = max(a + s for a, s in spans) - self._read_start
        self._goal_address, self._goal_size = self.spec.address(_GOAL)
        self._torque_address, _ = self.spec.address(_TORQUE)
        n = len(self.ids)
        self._last_raw = np.full((3, n), np.nan)  # position, velocity, effort registers (decoded)
        self._missed = dict.fromkeys(self.ids, 0)
        self._connected = False

    def _label(self, motor_id: int) -> str:
        return f"motor {motor_id} (joint {self.calibration.joint_of(motor_id).name!r})"

    @property
    def connected(self) -> bool:
        return self._connected

    def _require_connected(self) -> None:
        if not self._connected:
            raise MotorBusError(f"{type(self).__name__} on {self.port_name} is not connected")

    # ------------------------------------------------------------- SDK hooks
    @abc.abstractmethod
    def _open(self) -> None:
        """Open the port at ``baud_rate``; raise MotorBusError if it cannot be opened."""

    @abc.abstractmethod
    def _close_port(self) -> None: ...

    @abc.abstractmethod
    def _ping(self, motor_id: int) -> tuple[int | None, str]:
        """(model number, "") or (None, why it failed)."""

    @abc.abstractmethod
    def _sync_read(self, ids: Sequence[int]) -> tuple[dict[int, bytes], dict[int, int], dict[int, str]]:
        """ONE sync read of the state block: (payload per ID, status error per ID, reason per missing ID)."""

    @abc.abstractmethod
    def _sync_write(self, address: int, size: int, data: Mapping[int, bytes]) -> str:
        """ONE sync write; "" or why it was not sent."""

    @abc.abstractmethod
    def _write_byte(self, motor_id: int, address: int, value: int) -> str:
        """A write with status; "" or why it failed."""

    # -------------------------------------------------------------- lifecycle
    def connect(self) -> None:
        """Open the port, ping every motor and check its model; see the module docstring."""
        if self._connected:
            return
        self._open()
        try:
            problems = self._check_motors()
        except BaseException:  # Ctrl-C or an SDK error mid-ping: the port does not stay open
            self._close_port()
            raise
        if problems:
            self._close_port()
            raise MotorBusError(f"{type(self).__name__} on {self.port_name}: " + "; ".join(problems))
        self._connected = True

    def _check_motors(self) -> list[str]:
        """Ping every motor (twice before calling it missing: a lost status packet is not a lost
        motor) and compare its model number; the problems found, each naming the motor."""
        problems = []
        for motor_id in self.ids:
            number, why = self._ping(motor_id)
            if number is None:
                number, why = self._ping(motor_id)
            if number is None:
                problems.append(f"{self._label(motor_id)}: no answer to ping ({why})")
            elif number != self.spec.model_number:
                found = next((s.name for s in DATA.values() if s.model_number == number
                              and s.protocol == self.protocol), "unknown model")
                problems.append(f"{self._label(motor_id)}: model number {number} ({found}), "
                                f"configured {self.spec.name} ({self.spec.model_number})")
        return problems

    def close(self) -> None:
        """Close the port (torque is left as it is). Safe to call twice."""
        if self._connected:
            self._connected = False
            self._close_port()

    def __enter__(self) -> "MotorBus":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ read
    def read_state(self, deadline_s: float | None = None) -> BusState:
        """Read every motor (one sync read per try); see the module docstring.

        ``deadline_s``: time budget of this call in seconds (None: ``read_tries`` tries). A
        retry is only sent when the time left exceeds ``packet_timeout_s``.
        """
        self._require_connected()
        start = self._clock()
        payloads: dict[int, bytes] = {}
        errors: dict[int, int] = {}
        reasons: dict[int, str] = {}
        missing = list(self.ids)
        for attempt in range(self.read_tries):
            if attempt and deadline_s is not None and self._clock() - start + self.packet_timeout_s > deadline_s:
                break
            got, status, why = self._sync_read(missing)
            payloads.update(got)
            errors.update(status)
            for motor_id in got:
                reasons.pop(motor_id, None)
            reasons.update(why)
            missing = [i for i in missing if i not in payloads]
            if not missing:
                break
        fresh = np.array([i in payloads for i in self.ids])
        for column, motor_id in enumerate(self.ids):
            if motor_id in payloads:
                self._last_raw[:, column] = self._decode(payloads[motor_id])
                self._missed[motor_id] = 0
            else:
                self._missed[motor_id] += 1
        lost = [i for i in missing if self._missed[i] >= self.max_missed_reads]
        if lost:
            raise MotorBusError(f"{type(self).__name__} on {self.port_name}: " + "; ".join(
                f"{self._label(i)} missed {self._missed[i]} consecutive reads ({reasons.get(i, 'no status')})"
                for i in lost))
        position = self.calibration.ticks_to_radians(self._last_raw[0])
        _, direction, rad_per_tick = self.calibration._arrays()
        velocity = direction * self._last_raw[1] * self.spec.velocity_unit * rad_per_tick
        effort = direction * self._last_raw[2] * self.units.effort_scale
        return BusState(
            ids=self.ids, names=self.calibration.names, position=position, velocity=velocity, effort=effort,
            effort_unit=self.units.effort_unit, stamp=self._clock(), stale=bool(missing),
            failed_ids=tuple(missing), reasons={i: reasons.get(i, "no status") for i in missing}, fresh=fresh,
            error_ids=tuple(i for i in self.ids if errors.get(i, 0) and self._is_hardware_error(errors[i])))

    def _decode(self, payload: bytes) -> tuple[int, int, int]:
        out = []
        for name in (_POSITION, self.spec.velocity_register, self.spec.effort_register):
            address, size = self.spec.address(name)
            offset = address - self._read_start
            out.append(decode_value(self.spec, name, payload[offset:offset + size]))
        return tuple(out)

    def _is_hardware_error(self, error: int) -> bool:
        return error != 0

    # ----------------------------------------------------------------- write
    def write_goals(self, radians: Sequence[float]) -> np.ndarray:
        """ONE sync write of Goal Position; returns the ticks sent (clipped to the calibrated range)."""
        self._require_connected()
        goals = np.asarray(radians, dtype=float)
        if goals.shape != (len(self.ids),):
            raise ValueError(f"write_goals: expected {len(self.ids)} goals ({', '.join(self.calibration.names)}), "
                             f"got shape {goals.shape}")
        bad = [name for name, g in zip(self.calibration.names, goals) if not math.isfinite(g)]
        if bad:
            raise ValueError(f"write_goals: goal of joint(s) {', '.join(bad)} is not finite: {goals.tolist()}")
        ticks = np.rint(self.calibration.clip_ticks(self.calibration.radians_to_ticks(goals))).astype(int)
        data = {i: encode_value(self.spec, _GOAL, int(t)) for i, t in zip(self.ids, ticks)}
        why = self._sync_write(self._goal_address, self._goal_size, data)
        if why:
            raise MotorBusError(f"{type(self).__name__} on {self.port_name}: sync write of {_GOAL} "
                                f"to motors {list(self.ids)} failed: {why}")
        return ticks

    def write_register(self, name: str, value: int) -> None:
        """ONE sync write of ``value`` (raw register units) to register ``name`` of every motor
        (e.g. ``"Position P Gain"``); ``MotorBusError`` if it could not be sent, ``ValueError``
        naming a register the model does not have or a read-only one."""
        self._require_connected()
        if name not in self.spec.registers:
            raise ValueError(f"{self.spec.name} has no register {name!r}")
        if name in self.spec.read_only:
            raise ValueError(f"register {name!r} of {self.spec.name} is read-only")
        address, size = self.spec.address(name)
        data = {i: encode_value(self.spec, name, int(value)) for i in self.ids}
        why = self._sync_write(address, size, data)
        if why:
            raise MotorBusError(f"{type(self).__name__} on {self.port_name}: sync write of {name} to motors "
                                f"{list(self.ids)} failed: {why}")

    def set_torque(self, enabled: bool, tries: int = 1) -> None:
        """Torque Enable on every motor, each write tried up to ``tries`` times (a write with a
        status packet is repeated safely); tries all motors, then raises naming those that failed."""
        self._require_connected()
        failed = []
        for motor_id in self.ids:
            for _ in range(max(1, int(tries))):
                why = self._write_byte(motor_id, self._torque_address, int(bool(enabled)))
                if not why:
                    break
            if why:
                failed.append(f"{self._label(motor_id)}: {why}")
        if failed:
            raise MotorBusError(f"{type(self).__name__} on {self.port_name}: torque "
                                f"{'on' if enabled else 'off'} failed for " + "; ".join(failed))


def _timed_port_class(base: type) -> type:
    """``base`` (an SDK PortHandler) whose status-packet timeout is per instance (see the module docstring)."""

    class TimedPortHandler(base):
        def __init__(self, port_name: str, timeout_ms: float) -> None:
            super().__init__(port_name)
            self.timeout_ms = float(timeout_ms)

        def setPacketTimeout(self, packet_length: int) -> None:  # noqa: N802 (SDK name)
            self.setPacketTimeoutMillis(self.tx_time_per_byte * packet_length + self.timeout_ms)

        def clearPort(self) -> None:  # noqa: N802 (SDK name)
            # Called before every instruction packet. scservo_sdk's only flushes output: a status
            # packet that came in after its transaction timed out would be read as the answer to
            # the next one (same ID, older values). Drop what is waiting, as dynamixel_sdk does.
            self.ser.reset_input_buffer()
            self.ser.flush()

        def readPort(self, length: int):  # noqa: N802 (SDK name)
            # The SDKs poll (timeout=0 reads in a loop) until the status packet is in or its
            # time is up: sleep in select() until a byte arrives instead of spinning a core.
            if self.ser.in_waiting == 0:
                remaining_ms = self.packet_timeout - self.getTimeSinceStart()
                if remaining_ms > 0:
                    select.select([self.ser.fileno()], [], [], remaining_ms / 1000.0)
            return super().readPort(length)

    TimedPortHandler.__name__ = TimedPortHandler.__qualname__ = f"Timed{base.__name__}"
    return TimedPortHandler


class _SdkBus(MotorBus):
    """What both SDKs share: port, packet handler, the receive loop of a sync read."""

    _pkt_id: int
    _pkt_error: int
    _pkt_data: int

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._sdk = self._import_sdk()
        self._port = None
        self._ph = None

    @abc.abstractmethod
    def _import_sdk(self) -> Any: ...

    @abc.abstractmethod
    def _packet_handler(self) -> Any: ...

    @abc.abstractmethod
    def _rx_packet(self) -> tuple[list[int], int]: ...

    def _result_text(self, result: int, error: int = 0) -> str:
        if result != self._sdk.COMM_SUCCESS:
            return self._ph.getTxRxResult(result)
        return self._ph.getRxPacketError(error) if error else ""

    def _open(self) -> None:
        port = _timed_port_class(self._sdk.PortHandler)(self.port_name, 1000.0 * self.packet_timeout_s)
        try:
            opened = port.openPort() and port.setBaudRate(self.baud_rate)
        except Exception as exc:  # serial.SerialException, OSError
            raise MotorBusError(f"{type(self).__name__}: cannot open {self.port_name}: {exc}") from None
        if not opened:
            if port.is_open:
                port.closePort()
            raise MotorBusError(f"{type(self).__name__}: cannot open {self.port_name} at {self.baud_rate} baud")
        self._port, self._ph = port, self._packet_handler()

    def _close_port(self) -> None:
        if self._port is not None and self._port.is_open:
            self._port.closePort()
        self._port = None

    def _ping(self, motor_id: int) -> tuple[int | None, str]:
        number, result, error = self._ph.ping(self._port, motor_id)
        if result != self._sdk.COMM_SUCCESS:
            return None, self._result_text(result)
        return number, ""

    def _sync_read(self, ids: Sequence[int]) -> tuple[dict[int, bytes], dict[int, int], dict[int, str]]:
        # The SDK's GroupSyncRead.rxPacket stops at the first motor that fails and discards
        # the other motors' packets while it waits for it; so only its txPacket is used and
        # the status packets are collected here, each by its ID, until all came or the timeout.
        sdk = self._sdk
        group = sdk.GroupSyncRead(self._port, self._ph, self._read_start, self._read_length)
        for motor_id in ids:
            group.addParam(motor_id)
        result = group.txPacket()
        if result != sdk.COMM_SUCCESS:
            self._port.is_using = False
            why = f"sync read not sent: {self._result_text(result)}"
            return {}, {}, dict.fromkeys(ids, why)
        wanted = set(ids)
        payloads: dict[int, bytes] = {}
        errors: dict[int, int] = {}
        corrupt: set[int] = set()
        bad_status: dict[int, str] = {}
        for _ in range(4 * len(ids) + 4):  # every pass consumes a packet or ends in a timeout
            if wanted <= payloads.keys():
                break
            packet, result = self._rx_packet()
            if result == sdk.COMM_SUCCESS:
                motor_id = packet[self._pkt_id]
                data = bytes(packet[self._pkt_data:self._pkt_data + self._read_length])
                if motor_id in wanted and len(data) == self._read_length:
                    payloads[motor_id] = data
                    errors[motor_id] = packet[self._pkt_error]
                elif motor_id in wanted:
                    bad_status[motor_id] = f"status without data: {self._result_text(0, packet[self._pkt_error])}"
            elif result == sdk.COMM_RX_CORRUPT:
                if len(packet) > self._pkt_id:
                    corrupt.add(packet[self._pkt_id])  # the ID byte of a corrupt packet is only a hint
            else:
                break
        self._port.is_using = False
        reasons = {}
        for motor_id in ids:
            if motor_id in payloads:
                continue
            if motor_id in bad_status:
                reasons[motor_id] = bad_status[motor_id]
            elif motor_id in corrupt:
                reasons[motor_id] = "corrupt status packet (checksum mismatch)"
            else:
                reasons[motor_id] = "no status packet (timeout)"
        return payloads, errors, reasons

    def _sync_write(self, address: int, size: int, data: Mapping[int, bytes]) -> str:
        group = self._sdk.GroupSyncWrite(self._port, self._ph, address, size)
        for motor_id, raw in data.items():
            group.addParam(motor_id, list(raw))
        result = group.txPacket()
        self._port.is_using = False
        return "" if result == self._sdk.COMM_SUCCESS else self._result_text(result)

    def _write_byte(self, motor_id: int, address: int, value: int) -> str:
        result, error = self._ph.write1ByteTxRx(self._port, motor_id, address, value)
        if result != self._sdk.COMM_SUCCESS:
            return self._result_text(result)
        return self._result_text(result, self._write_refused(error))

    def _write_refused(self, error: int) -> int:
        """The part of a write's status error that means the write was refused (0: accepted)."""
        return 0


class DynamixelBus(_SdkBus):
    """Dynamixel Protocol 2.0 servos (XL330-M288, XL430-W250) through ``dynamixel_sdk``."""

    protocol = "dynamixel"
    _pkt_id, _pkt_error, _pkt_data = 4, 8, 9  # protocol2_packet_handler PKT_ID, PKT_ERROR, PKT_PARAMETER0 + 1
    _ALERT = 0x80

    def _import_sdk(self) -> Any:
        import dynamixel_sdk

        return dynamixel_sdk

    def _packet_handler(self) -> Any:
        return self._sdk.PacketHandler(2.0)

    def _rx_packet(self) -> tuple[list[int], int]:
        return self._ph.rxPacket(self._port, False)

    def _is_hardware_error(self, error: int) -> bool:
        return bool(error & self._ALERT)

    def _write_refused(self, error: int) -> int:
        return error & ~self._ALERT  # an error number (access, data range, ...); the alert bit alone is not


class FeetechBus(_SdkBus):
    """Feetech STS servos (STS3215) through ``scservo_sdk`` (little-endian words, ``PacketHandler(0)``)."""

    protocol = "feetech"
    _pkt_id, _pkt_error, _pkt_data = 2, 4, 5  # protocol_packet_handler PKT_ID, PKT_ERROR, PKT_PARAMETER0

    def _import_sdk(self) -> Any:
        import scservo_sdk

        return scservo_sdk

    def _packet_handler(self) -> Any:
        return self._sdk.PacketHandler(0)

    def _rx_packet(self) -> tuple[list[int], int]:
        return self._ph.rxPacket(self._port)


BUSES: dict[str, type[MotorBus]] = {"dynamixel": DynamixelBus, "feetech": FeetechBus}


def make_bus(port: str, calibration: ArmCalibration, **kwargs) -> MotorBus:
    """The bus class for the calibration's model, constructed (not connected)."""
    return BUSES[calibration.spec.protocol](port, calibration, **kwargs)

