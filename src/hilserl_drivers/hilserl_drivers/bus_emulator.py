"""Servo bus emulators on a pseudo-terminal: a chain of Dynamixel or Feetech servos, no ROS.

Each emulator opens a pty (``os.openpty``) and answers on its master side as the servos
of one bus would, so the real vendor SDKs (``dynamixel_sdk``, ``scservo_sdk``) and any
driver built on them can open ``emulator.port`` (the slave path, e.g. ``/dev/pts/3``) as
if it were a USB serial adapter. A pty takes any baud rate the SDKs ask for.

- ``DynamixelEmulator``: Dynamixel Protocol 2.0 (header FF FF FD 00, LE16 length,
  CRC-16 with polynomial 0x8005, byte stuffing): PING (broadcast too), READ, WRITE
  (broadcast too), SYNC_READ, SYNC_WRITE, REBOOT; FACTORY_RESET and every other
  instruction answer an Instruction Error.
- ``FeetechEmulator``: Feetech SCS/STS protocol as ``scservo_sdk`` speaks it (header FF FF,
  one-byte length, checksum ``~(id + length + instruction + params) & 0xFF``): PING, READ,
  WRITE, SYNC_READ, SYNC_WRITE. Other instructions get no answer.

Every motor has a control table (a ``bytearray`` laid out from ``servo_tables.DATA``) and a simple
motor model, stepped on the emulator's clock whenever the motor is addressed: with
torque on, Present Position moves toward Goal Position (clipped to the position limits)
at ``speed`` ticks/s, Present Velocity is that speed while moving, and the effort
register (Present Current or Present Load) is proportional to the remaining error,
clipped. With torque off the goal is ignored and the position holds (unless moved "by
hand" with ``EmulatedMotor.set_present_position``).

Faults, settable while serving, per motor or for the whole bus (``set_fault``):
``no_reply`` (the motor executes instructions but never answers), ``corrupt_checksum``
(its status packets carry a wrong CRC/checksum), ``hardware_error`` (its status packets
carry the alert bit 0x80 (Dynamixel) or the overload bit 0x20 (Feetech), and it stops
driving until the fault is cleared; a Dynamixel REBOOT clears it as on a real motor),
``disappear`` (the motor leaves the bus: it neither executes nor answers). The
``reply_delay_s`` of the bus delays every answer (a slow bus).

Incoming bytes are parsed as a stream: packets split across reads are joined, garbage
before a header is skipped, a packet whose CRC/checksum does not match is dropped
silently (the emulator resynchronises one byte further on) and an incomplete packet
that waits longer than ``frame_timeout_s`` for its remaining bytes is discarded.
``stats`` counts all of it.

Command line (a dry run for a driver)::

    python -m hilserl_drivers.bus_emulator dynamixel --ids 1 2 3 4 5 6 --model xl330
    python -m hilserl_drivers.bus_emulator feetech --ids 1 2 3 4 5 6

prints the pty path and serves until Ctrl-C.

Not modelled: baud rate and Return Delay Time (a pty has neither), REG_WRITE/ACTION,
BULK_READ/BULK_WRITE, FAST_SYNC_READ, operating modes other than position control,
Profile Velocity/Acceleration, the Feetech EEPROM Lock.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import math
import os
import select
import signal
import sys
import threading
import time
import tty
from collections.abc import Callable, Iterable
from typing import NamedTuple

BROADCAST_ID = 0xFE
"""Broadcast ID of both protocols."""

FAULTS = ("no_reply", "corrupt_checksum", "hardware_error", "disappear")
"""Per-motor faults ``set_fault`` accepts."""


from hilserl_drivers.servo_tables import (
    DATA,
    MODEL_ALIASES,
    ModelSpec,
    decode_value,
    encode_value,
    model_spec,
)


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


# --------------------------------------------------------------------------- motors
@dataclasses.dataclass
class Faults:
    """The faults of one motor (see the module docstring)."""

    no_reply: bool = False
    corrupt_checksum: bool = False
    hardware_error: bool = False
    disappear: bool = False


class EmulatedMotor:
    """One servo: its control table and motor model. Thread-safe (the bus's lock)."""

    def __init__(self, spec: ModelSpec, motor_id: int, position: float, speed: float,
                 clock: Callable[[], float], lock: threading.RLock) -> None:
        self.spec = spec
        self.speed = float(speed)
        """Speed limit of the motor model, ticks/s."""
        self.faults = Faults()
        self.table = bytearray(spec.table_size)
        self._clock = clock
        self._lock = lock
        self._position = float(position)
        self._last_step = clock()
        for name, value in spec.defaults.items():
            self._set(name, value)
        self._set("Model Number", spec.model_number)
        self._set("Firmware Version" if "Firmware Version" in spec.registers else "Firmware Major Version",
                  spec.firmware_version)
        self._set("ID", motor_id)
        self._set("Goal Position", round(position))
        self._update_registers(0.0)

    # ------------------------------------------------------------ register access
    @property
    def id(self) -> int:
        """The ID the motor answers to: its ID register (a WRITE to it moves the motor to another ID)."""
        return self.table[self.spec.address("ID")[0]]

    def _get(self, name: str) -> int:
        address, size = self.spec.address(name)
        return decode_value(self.spec, name, bytes(self.table[address:address + size]))

    def _set(self, name: str, value: int) -> None:
        address, size = self.spec.address(name)
        self.table[address:address + size] = encode_value(self.spec, name, value)

    def read_register(self, name: str) -> int:
        """The decoded value of register ``name`` now (the motor model is stepped first)."""
        with self._lock:
            self.step()
            return self._get(name)

    def write_register(self, name: str, value: int) -> None:
        """Set register ``name``, read-only ones included (this is the test's hand, not the bus).

        The registers the motor model computes (Present Position, the velocity and effort
        registers, Moving) cannot be set: move the motor with ``set_present_position``.
        """
        derived = {"Present Position", self.spec.velocity_register, self.spec.effort_register, "Moving"}
        if name in derived:
            raise ValueError(f"{self.spec.name} {name} is computed by the motor model; "
                             "use set_present_position to move the motor")
        with self._lock:
            self.step()
            self._set(name, value)
            self.step()

    def set_present_position(self, ticks: float) -> None:
        """Move the motor by hand to ``ticks`` (a person moving a leader arm with torque off)."""
        with self._lock:
            self.step()
            self._position = float(ticks)
            self.step()

    def read_bytes(self, address: int, length: int) -> bytes | None:
        """The raw bytes ``address`` .. ``address + length``, None past the control table."""
        with self._lock:
            if address < 0 or length < 0 or address + length > len(self.table):
                return None
            self.step()
            return bytes(self.table[address:address + length])

    def check_write(self, address: int, data: bytes) -> str | None:
        """Why a bus WRITE of ``data`` at ``address`` must be refused, or None (Dynamixel rules).

        ``"access"``: past the table, a byte outside every register, a read-only register, or
        the EEPROM area while torque is on; ``"length"``: a register only partly written.
        """
        end = address + len(data)
        if address < 0 or end > len(self.table):
            return "access"
        with self._lock:
            if address < self.spec.eeprom_end and self._get("Torque Enable"):
                return "access"
        covered = 0
        for name, (reg_address, size) in self.spec.registers.items():
            if reg_address >= end or reg_address + size <= address:
                continue
            if reg_address < address or reg_address + size > end:
                return "length"
            if name in self.spec.read_only:
                return "access"
            covered += size
        if covered != len(data):
            return "access"
        return None

    def write_bytes(self, address: int, data: bytes, skip_read_only: bool = False) -> None:
        """Write raw bytes from the bus (after ``check_write``, or skipping read-only registers)."""
        with self._lock:
            self.step()
            data = data[:max(0, len(self.table) - address)]  # bytes past the table are lost
            end = address + len(data)
            if skip_read_only:
                keep = {a: self.table[a] for name in self.spec.read_only if name in self.spec.registers
                        for a in range(*self._span(name)) if address <= a < end}
            self.table[address:end] = data
            if skip_read_only:
                for a, value in keep.items():
                    self.table[a] = value
            self.step()

    def _span(self, name: str) -> tuple[int, int]:
        address, size = self.spec.address(name)
        return address, address + size

    # ------------------------------------------------------------------ motor model
    def driving(self) -> bool:
        """Torque on and no hardware error: the motor pursues its goal."""
        return bool(self._get("Torque Enable")) and not self.faults.hardware_error

    def target(self) -> float:
        """Goal Position clipped to the position limits."""
        low = self._get(self.spec.min_position_register)
        high = self._get(self.spec.max_position_register)
        return _clip(self._get("Goal Position"), low, max(low, high))

    def step(self, now: float | None = None) -> None:
        """Advance the motor model to ``now`` (default: the clock)."""
        with self._lock:
            now = self._clock() if now is None else now
            dt = max(0.0, now - self._last_step)
            self._last_step = now
            error = 0.0
            if self.driving():
                error = self.target() - self._position
                move = min(abs(error), self.speed * dt)
                self._position += math.copysign(move, error)
                error = self.target() - self._position
                if abs(error) < 1e-9:
                    self._position, error = self.target(), 0.0
            self._update_registers(error)

    def _update_registers(self, error: float) -> None:
        """Present Position / velocity / effort / Moving from the model's state."""
        spec = self.spec
        position_bits = 8 * spec.address("Present Position")[1] - 1
        limit = (1 << position_bits) - 1
        self._set("Present Position", round(_clip(self._position, -limit, limit)))
        moving = self.driving() and error != 0.0
        velocity = math.copysign(self.speed, error) if moving else 0.0
        velocity_raw = round(velocity / spec.velocity_unit)
        self._set(spec.velocity_register, int(_clip(velocity_raw, -32767, 32767)))
        effort = round(_clip(spec.effort_per_tick * error, -spec.effort_limit, spec.effort_limit)) if moving else 0
        self._set(spec.effort_register, effort)
        self._set("Moving", int(moving))
        if "Hardware Error Status" in spec.registers:
            self._set("Hardware Error Status", 0x20 if self.faults.hardware_error else 0)  # bit 5: overload

    def reboot(self) -> None:
        """What a Dynamixel REBOOT does here: torque off, hardware error cleared, goal at the present position."""
        with self._lock:
            self.step()
            self.faults.hardware_error = False
            self._set("Torque Enable", 0)
            self._set("Goal Position", round(self._position))
            self.step()

    @property
    def position(self) -> float:
        """The model's exact position (ticks), stepped to now."""
        with self._lock:
            self.step()
            return self._position


# ------------------------------------------------------------------------ bus base
@dataclasses.dataclass
class BusStats:
    """What the emulator saw on the bus."""

    packets: int = 0  # well-formed instruction packets
    replies: int = 0  # status packets written
    bad_checksums: int = 0  # packets dropped for a CRC/checksum mismatch
    dropped_bytes: int = 0  # garbage skipped, and stale incomplete packets
    unhandled: int = 0  # instructions the emulator does not implement or could not parse


class Request(NamedTuple):
    """One parsed instruction packet."""

    motor_id: int
    instruction: int
    params: bytes


class ServoBusEmulator(abc.ABC):
    """A pty that answers as a chain of servos. Subclasses speak one protocol.

    ``start()`` runs the reader thread; ``close()`` stops it and closes the pty (idempotent);
    used as a context manager it does both. ``port`` is the path to open.
    """

    protocol: str = ""

    def __init__(self, ids: Iterable[int], model: str | ModelSpec, *, speed: float = 2000.0,
                 initial_position: float = 2048.0, reply_delay_s: float = 0.0,
                 frame_timeout_s: float = 0.1, clock: Callable[[], float] = time.monotonic) -> None:
        """``ids``: the motors (unique, 0..252); ``model``: a ``DATA`` name or alias;
        ``speed``: the motor model's speed limit (ticks/s); ``initial_position``: the
        position (and goal) of every motor at start (ticks)."""
        spec = model_spec(model)
        if spec.protocol != self.protocol:
            raise ValueError(f"{spec.name} is a {spec.protocol} servo, not a {self.protocol} one")
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("ids: at least one motor ID is needed")
        if len(set(ids)) != len(ids):
            raise ValueError(f"ids: duplicate motor IDs in {ids}")
        if any(not 0 <= i <= 252 for i in ids):
            raise ValueError(f"ids: motor IDs must be in 0..252, got {ids}")
        if not (math.isfinite(speed) and speed > 0):
            raise ValueError(f"speed must be a finite number of ticks/s > 0, got {speed!r}")
        if not (math.isfinite(frame_timeout_s) and frame_timeout_s > 0):
            raise ValueError(f"frame_timeout_s must be > 0, got {frame_timeout_s!r}")
        self.spec = spec
        self.frame_timeout_s = float(frame_timeout_s)
        self.stats = BusStats()
        self._clock = clock
        self._lock = threading.RLock()
        self._motors = [EmulatedMotor(spec, i, initial_position, speed, clock, self._lock) for i in ids]
        self.reply_delay_s = reply_delay_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._buffer = bytearray()
        self._last_rx = 0.0
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass unchanged
        os.set_blocking(self._master, False)
        self._port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()

    # ------------------------------------------------------------------ lifecycle
    @property
    def port(self) -> str:
        """The pty slave path for the SDK's PortHandler (e.g. ``/dev/pts/3``)."""
        return self._port

    @property
    def reply_delay_s(self) -> float:
        """Delay before every answer (s): a slow bus. Settable while serving."""
        return self._reply_delay_s

    @reply_delay_s.setter
    def reply_delay_s(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"reply_delay_s must be a finite number of seconds >= 0, got {value!r}")
        self._reply_delay_s = float(value)

    def start(self) -> "ServoBusEmulator":
        """Start answering on the pty (once)."""
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} on {self._port} is closed; create a new one")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=f"{type(self).__name__}({self._port})",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the reader thread and close the pty. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "ServoBusEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --------------------------------------------------------------- motors, faults
    @property
    def motors(self) -> list[EmulatedMotor]:
        """Every motor, including those that left the bus (``disappear``)."""
        return list(self._motors)

    def motor(self, motor_id: int) -> EmulatedMotor:
        """The motor whose ID register is ``motor_id``; KeyError names the IDs on the bus."""
        with self._lock:
            for m in self._motors:
                if m.id == motor_id:
                    return m
            raise KeyError(f"no motor with ID {motor_id}; IDs: {sorted(m.id for m in self._motors)}")

    def set_fault(self, fault: str, enabled: bool = True, ids: int | Iterable[int] | None = None) -> None:
        """Turn ``fault`` (one of ``FAULTS``) on or off for the motors ``ids`` (None: every motor)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; faults: {', '.join(FAULTS)} (bus-wide: reply_delay_s)")
        with self._lock:
            for m in self._select(ids):
                m.step()
                setattr(m.faults, fault, bool(enabled))
                m.step()

    def clear_faults(self, ids: int | Iterable[int] | None = None) -> None:
        """Clear every fault of the motors ``ids`` (None: all) and the bus's reply delay (None only)."""
        with self._lock:
            for m in self._select(ids):
                m.step()
                m.faults = Faults()
                m.step()
            if ids is None:
                self.reply_delay_s = 0.0

    def _select(self, ids: int | Iterable[int] | None) -> list[EmulatedMotor]:
        if ids is None:
            return list(self._motors)
        if isinstance(ids, int):
            ids = [ids]
        return [self.motor(i) for i in ids]

    def _on_bus(self, motor_id: int) -> list[EmulatedMotor]:
        """The motors that hear ``motor_id`` (all present ones for broadcast), in ID order."""
        present = [m for m in self._motors if not m.faults.disappear]
        if motor_id == BROADCAST_ID:
            return sorted(present, key=lambda m: m.id)
        return [m for m in present if m.id == motor_id]

    # ------------------------------------------------------------------ reader loop
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._master, self._wake_r], [], [], 0.5)
            except (OSError, ValueError):
                return
            if self._wake_r in readable or self._stop.is_set():
                return
            if self._master not in readable:
                continue
            try:
                data = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            if data:
                self._receive(data)

    def _receive(self, data: bytes) -> None:
        """Feed bytes from the bus; answer every complete packet."""
        now = self._clock()
        if self._buffer and now - self._last_rx > self.frame_timeout_s:
            self.stats.dropped_bytes += len(self._buffer)  # an incomplete packet went stale
            self._buffer.clear()
        self._last_rx = now
        self._buffer += data
        for request in self._parse(self._buffer):
            self.stats.packets += 1
            with self._lock:
                replies = self._handle(request)
            if replies and self._reply_delay_s > 0 and self._stop.wait(self._reply_delay_s):
                return
            if replies:
                self.stats.replies += len(replies)
                self._write(b"".join(replies))

    def _write(self, data: bytes) -> None:
        """Write to the master side; give up after 1 s if nobody reads the pty."""
        deadline = time.monotonic() + 1.0
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                written = os.write(self._master, view)
                view = view[written:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.stats.dropped_bytes += len(view)
                    return
                select.select([], [self._master], [], 0.05)
            except OSError:
                return

    # ----------------------------------------------------------- protocol (subclass)
    @abc.abstractmethod
    def _parse(self, buffer: bytearray) -> list[Request]:
        """Remove every complete packet (and the garbage before it) from ``buffer``; return them."""

    @abc.abstractmethod
    def _handle(self, request: Request) -> list[bytes]:
        """Execute ``request``; the status packets to send, in order."""


def _drop(buffer: bytearray, count: int, stats: BusStats) -> None:
    del buffer[:count]
    stats.dropped_bytes += count


# ----------------------------------------------------------------- Dynamixel 2.0
DXL_HEADER = b"\xff\xff\xfd\x00"
DXL_STATUS = 0x55
DXL_PING, DXL_READ, DXL_WRITE, DXL_FACTORY_RESET, DXL_REBOOT = 0x01, 0x02, 0x03, 0x06, 0x08
DXL_SYNC_READ, DXL_SYNC_WRITE = 0x82, 0x83
DXL_ERR_INSTRUCTION, DXL_ERR_DATA_LENGTH, DXL_ERR_ACCESS = 0x02, 0x05, 0x07
DXL_ERR_ALERT = 0x80
DXL_MAX_LENGTH = 1024
"""Longest Length field accepted (the SDK's packet buffer size); longer is taken for noise."""


def _dxl_crc_table() -> list[int]:
    # CRC-16 with polynomial x^16 + x^15 + x^2 + 1 (0x8005), MSB first, initial value 0:
    # the table of the e-manual's update_crc (emanual.robotis.com/docs/en/dxl/crc/).
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_DXL_CRC_TABLE = _dxl_crc_table()


def dxl_crc16(data: bytes, crc: int = 0) -> int:
    """Dynamixel Protocol 2.0 CRC-16 of ``data`` (header through last parameter)."""
    for byte in data:
        crc = ((crc << 8) ^ _DXL_CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def dxl_stuff(body: bytes) -> bytes:
    """Byte stuffing of instruction..parameters: every FF FF FD becomes FF FF FD FD."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def dxl_unstuff(body: bytes) -> bytes:
    """Undo ``dxl_stuff``: the FD after every FF FF FD is removed."""
    out = bytearray()
    i = 0
    while i < len(body):
        byte = body[i]
        out.append(byte)
        if (byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF
                and i + 1 < len(body) and body[i + 1] == 0xFD):
            i += 1
        i += 1
    return bytes(out)


def dxl_packet(motor_id: int, body: bytes, corrupt_crc: bool = False) -> bytes:
    """A whole Protocol 2.0 packet: header, ID, length, stuffed ``body`` (instruction.. or 0x55, error..), CRC."""
    stuffed = dxl_stuff(body)
    head = DXL_HEADER + bytes([motor_id]) + (len(stuffed) + 2).to_bytes(2, "little") + stuffed
    crc = dxl_crc16(head)
    if corrupt_crc:
        crc ^= 0xFFFF
    return head + crc.to_bytes(2, "little")


class DynamixelEmulator(ServoBusEmulator):
    """Dynamixel Protocol 2.0 servos (XL330-M288, XL430-W250) on a pty. See the module docstring."""

    protocol = "dynamixel"

    def __init__(self, ids: Iterable[int], model: str | ModelSpec = "xl330-m288", **kwargs) -> None:
        super().__init__(ids, model, **kwargs)

    def _parse(self, buffer: bytearray) -> list[Request]:
        requests = []
        while True:
            start = buffer.find(DXL_HEADER)
            if start < 0:
                keep = next((k for k in (3, 2, 1) if buffer.endswith(DXL_HEADER[:k])), 0)
                _drop(buffer, len(buffer) - keep, self.stats)
                return requests
            if start:
                _drop(buffer, start, self.stats)
            if len(buffer) < 7:
                return requests
            length = buffer[5] | buffer[6] << 8
            if not 3 <= length <= DXL_MAX_LENGTH:
                _drop(buffer, 1, self.stats)
                continue
            if len(buffer) < 7 + length:
                return requests
            packet = bytes(buffer[:7 + length])
            if dxl_crc16(packet[:-2]) != int.from_bytes(packet[-2:], "little"):
                self.stats.bad_checksums += 1
                _drop(buffer, 1, self.stats)  # resynchronise: a real packet may start inside
                continue
            del buffer[:7 + length]
            body = dxl_unstuff(packet[7:-2])
            requests.append(Request(packet[4], body[0], body[1:]))

    def _status(self, motor: EmulatedMotor, error: int = 0, params: bytes = b"") -> list[bytes]:
        if motor.faults.no_reply:
            return []
        if motor.faults.hardware_error:
            error |= DXL_ERR_ALERT
        body = bytes([DXL_STATUS, error]) + params
        return [dxl_packet(motor.id, body, corrupt_crc=motor.faults.corrupt_checksum)]

    def _replies_to(self, motor: EmulatedMotor, instruction: int) -> bool:
        """Status Return Level: 0 ping only, 1 also read, 2 everything."""
        level = motor.read_register("Status Return Level")
        return instruction == DXL_PING or level >= 2 or (level == 1 and instruction in (DXL_READ, DXL_SYNC_READ))

    def _handle(self, request: Request) -> list[bytes]:
        motor_id, instruction, params = request
        motors = self._on_bus(motor_id)
        broadcast = motor_id == BROADCAST_ID
        if instruction == DXL_PING:
            info = self.spec.model_number.to_bytes(2, "little") + bytes([self.spec.firmware_version])
            return [p for m in motors for p in self._status(m, 0, info)]
        if instruction == DXL_READ:
            if broadcast or not motors:
                return []
            if len(params) != 4:
                return self._answer(motors[0], instruction, DXL_ERR_DATA_LENGTH)
            address, length = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:], "little")
            data = motors[0].read_bytes(address, length)
            if data is None:
                return self._answer(motors[0], instruction, DXL_ERR_ACCESS)
            return self._answer(motors[0], instruction, 0, data)
        if instruction == DXL_WRITE:
            if len(params) < 3:
                if broadcast:
                    return []
                return [p for m in motors for p in self._answer(m, instruction, DXL_ERR_DATA_LENGTH)]
            address = int.from_bytes(params[:2], "little")
            replies = []
            for m in motors:
                error = self._write_motor(m, address, params[2:])
                if not broadcast:
                    replies += self._answer(m, instruction, error)
            return replies
        if instruction == DXL_SYNC_READ:
            if not broadcast or len(params) < 5:
                self.stats.unhandled += 1
                return []
            address, length = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            replies = []
            for wanted in params[4:]:
                for m in self._on_bus(wanted):
                    data = m.read_bytes(address, length)
                    replies += (self._answer(m, instruction, DXL_ERR_ACCESS) if data is None
                                else self._answer(m, instruction, 0, data))
            return replies
        if instruction == DXL_SYNC_WRITE:
            if not broadcast or len(params) < 4:
                self.stats.unhandled += 1
                return []
            address, length = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            blocks = params[4:]
            if length == 0 or len(blocks) % (length + 1):
                self.stats.unhandled += 1
                return []
            for i in range(0, len(blocks), length + 1):
                for m in self._on_bus(blocks[i]):
                    self._write_motor(m, address, blocks[i + 1:i + 1 + length])
            return []
        if instruction == DXL_REBOOT:
            replies = []
            for m in motors:
                replies += [] if broadcast else self._answer(m, instruction, 0)
                m.reboot()
            return replies
        # FACTORY_RESET and everything else: not implemented -> Instruction Error.
        self.stats.unhandled += 1
        if broadcast:
            return []
        return [p for m in motors for p in self._status(m, DXL_ERR_INSTRUCTION)]

    def _answer(self, motor: EmulatedMotor, instruction: int, error: int, data: bytes = b"") -> list[bytes]:
        return self._status(motor, error, data) if self._replies_to(motor, instruction) else []

    def _write_motor(self, motor: EmulatedMotor, address: int, data: bytes) -> int:
        refusal = motor.check_write(address, data)
        if refusal == "length":
            return DXL_ERR_DATA_LENGTH
        if refusal == "access":
            return DXL_ERR_ACCESS
        motor.write_bytes(address, data)
        return 0


# -------------------------------------------------------------------- Feetech SCS/STS
FT_PING, FT_READ, FT_WRITE, FT_SYNC_READ, FT_SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83
FT_ERR_OVERLOAD = 0x20
"""Status error bit 5, overload (``scservo_sdk`` ERRBIT_OVERLOAD): the ``hardware_error`` fault."""
FT_MAX_LENGTH = 250
"""Longest Length field accepted (``scservo_sdk``'s packet buffer size)."""


def feetech_checksum(body: bytes) -> int:
    """Checksum of ID, length, instruction/error and parameters: ``~sum & 0xFF``."""
    return ~sum(body) & 0xFF


def feetech_packet(motor_id: int, body: bytes, corrupt_checksum: bool = False) -> bytes:
    """A whole packet: FF FF, ID, length, ``body`` (instruction.. or error..), checksum."""
    head = bytes([motor_id, len(body) + 1]) + body
    checksum = feetech_checksum(head)
    if corrupt_checksum:
        checksum ^= 0xFF
    return b"\xff\xff" + head + bytes([checksum])


class FeetechEmulator(ServoBusEmulator):
    """Feetech STS servos (STS3215) on a pty, as ``scservo_sdk`` with ``PacketHandler(0)`` sees them.

    Replies: PING always; READ and SYNC_READ always; WRITE when Response Status Level is 1.
    Writes to read-only registers are ignored without an error (Feetech has no access-error
    bit); reads past the control table and unknown instructions get no answer.
    """

    protocol = "feetech"

    def __init__(self, ids: Iterable[int], model: str | ModelSpec = "sts3215", **kwargs) -> None:
        super().__init__(ids, model, **kwargs)

    def _parse(self, buffer: bytearray) -> list[Request]:
        requests = []
        while True:
            start = buffer.find(b"\xff\xff")
            if start < 0:
                keep = 1 if buffer.endswith(b"\xff") else 0
                _drop(buffer, len(buffer) - keep, self.stats)
                return requests
            if start:
                _drop(buffer, start, self.stats)
            if len(buffer) < 4:
                return requests
            if buffer[2] == 0xFF:  # FF FF FF ...: the header starts one byte on
                _drop(buffer, 1, self.stats)
                continue
            length = buffer[3]
            if not 2 <= length <= FT_MAX_LENGTH:
                _drop(buffer, 1, self.stats)
                continue
            if len(buffer) < 4 + length:
                return requests
            packet = bytes(buffer[:4 + length])
            if feetech_checksum(packet[2:-1]) != packet[-1]:
                self.stats.bad_checksums += 1
                _drop(buffer, 1, self.stats)
                continue
            del buffer[:4 + length]
            requests.append(Request(packet[2], packet[4], packet[5:-1]))

    def _status(self, motor: EmulatedMotor, data: bytes = b"") -> list[bytes]:
        if motor.faults.no_reply:
            return []
        error = FT_ERR_OVERLOAD if motor.faults.hardware_error else 0
        return [feetech_packet(motor.id, bytes([error]) + data, corrupt_checksum=motor.faults.corrupt_checksum)]

    def _handle(self, request: Request) -> list[bytes]:
        motor_id, instruction, params = request
        motors = self._on_bus(motor_id)
        broadcast = motor_id == BROADCAST_ID
        if instruction == FT_PING:
            return [p for m in motors for p in self._status(m)]
        if instruction == FT_READ:
            if broadcast or not motors or len(params) != 2:
                return []
            data = motors[0].read_bytes(params[0], params[1])
            return [] if data is None else self._status(motors[0], data)
        if instruction == FT_WRITE:
            if len(params) < 2:
                return []
            replies = []
            for m in motors:
                m.write_bytes(params[0], params[1:], skip_read_only=True)
                if not broadcast and m.read_register("Response Status Level") >= 1:
                    replies += self._status(m)
            return replies
        if instruction == FT_SYNC_READ:
            if not broadcast or len(params) < 3:
                self.stats.unhandled += 1
                return []
            replies = []
            for wanted in params[2:]:
                for m in self._on_bus(wanted):
                    data = m.read_bytes(params[0], params[1])
                    if data is not None:
                        replies += self._status(m, data)
            return replies
        if instruction == FT_SYNC_WRITE:
            if not broadcast or len(params) < 2:
                self.stats.unhandled += 1
                return []
            address, length = params[0], params[1]
            blocks = params[2:]
            if length == 0 or len(blocks) % (length + 1):
                self.stats.unhandled += 1
                return []
            for i in range(0, len(blocks), length + 1):
                for m in self._on_bus(blocks[i]):
                    m.write_bytes(address, blocks[i + 1:i + 1 + length], skip_read_only=True)
            return []
        self.stats.unhandled += 1
        return []


EMULATORS: dict[str, type[ServoBusEmulator]] = {"dynamixel": DynamixelEmulator, "feetech": FeetechEmulator}


# ---------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hilserl_drivers.bus_emulator",
        description="Emulate a chain of servos on a pseudo-terminal and print its path; serve until Ctrl-C.")
    parser.add_argument("protocol", choices=sorted(EMULATORS))
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="motor IDs (default 1..6)")
    parser.add_argument("--model", default=None,
                        help=f"servo model: {', '.join([*DATA, *MODEL_ALIASES])} "
                             "(default xl330-m288 for dynamixel, sts3215 for feetech)")
    parser.add_argument("--speed", type=float, default=2000.0, help="speed limit of the motor model, ticks/s")
    parser.add_argument("--initial-position", type=float, default=2048.0, help="start position of every motor, ticks")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="delay before every answer, s")
    args = parser.parse_args(argv)
    cls = EMULATORS[args.protocol]
    kwargs = {"model": args.model} if args.model else {}
    try:
        emulator = cls(args.ids, speed=args.speed, initial_position=args.initial_position,
                       reply_delay_s=args.reply_delay, **kwargs)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    # Own handlers: a process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with emulator:
        print(emulator.port, flush=True)
        print(f"{args.protocol}: {emulator.spec.name} IDs {args.ids} on {emulator.port}; Ctrl-C to stop",
              file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
