#!/usr/bin/env python3
"""Servo bus control tick: one ``read_state()`` + one ``write_goals()`` through the real SDKs.

    source env.sh
    python bench/bus_tick.py --out bus_tick.json            # 2000 ticks per bus and mode
    python bench/bus_tick.py --quick --out bus_tick.json    # 200 ticks: a few seconds

A tick is what the driver does every control period: ONE sync read of Present Position,
the velocity register and the effort register of 6 motors (``MotorBus.read_state``),
then ONE sync write of Goal Position (``MotorBus.write_goals``), through
``dynamixel_sdk`` / ``scservo_sdk`` over a ``bus_emulator`` pty, for an XL330-M288
chain, an XL430-W250 chain (``DynamixelBus``) and an STS3215 chain (``FeetechBus``).
Torque is on and the goals follow a slow sine (0.3 rad, 2 s period, a phase per joint),
so the motors move; ticks run back to back (no pacing).

What this measures, and what it does not:

- A pty has no baud rate: the emulator's answer arrives as fast as the OS and Python let
  it. The tick time here is therefore the SOFTWARE cost on this machine (SDK packet
  building and polling, the driver's decoding, the kernel's pty, and the emulator
  answering), with no byte time on a wire in it.
- The byte-time floor is what a real 1 Mbaud bus adds on top: every byte of the sync
  read, the 6 status packets and the sync write, 10 bits per byte (start, 8 data, stop)
  at 1,000,000 baud. Byte counts come from the register sizes in ``servo_tables.DATA``
  and the protocols' framing (shown per packet in the JSON) and are checked against the
  bytes the emulator actually saw on the pty (``bytes_seen_per_tick``; a Dynamixel status
  packet gains a stuffing byte now and then, when a negative velocity or effort (FF bytes)
  runs into an FD byte). Not in the floor: the servos' Return Delay Time (the spec
  default is reported apart: XL330/XL430 ship with 250 = 500 us per status packet), the
  USB adapter's latency timer (FTDI: 16 ms default, 1 ms when set), Dynamixel byte
  stuffing (rare, see above), and the servo's own processing.
  ``estimated_real_tick_p99_ms`` = measured p99 + floor is the rough sum.
- The tail is the machine's scheduling: both SDKs wait for a status packet by polling
  the port (pyserial, ``timeout=0``) in a loop, so the driver's thread spins on a core
  while the kernel's pty work and the emulator need one too. On a machine with few cores
  or other load, a tick that loses the CPU costs a scheduler slice (a few ms): compare
  p50 with p99 and ``ticks_over_limit_fraction``, and ``machine.load_average``.
- Two modes per bus. ``emulator_in_process``: the emulator's reader thread shares this
  process (and its GIL) with the driver; the time it spends answering is measured
  (``emulator_busy_ms``) and is part of the tick. ``emulator_subprocess``: the emulator
  runs as ``python -m hilserl_drivers.bus_emulator`` in its own process, closer to real
  hardware (the driver process only pays for itself), but its answer still costs a
  Python wake-up, which a servo's firmware does not.

Target (issue 10): tick p99 <= 2 x floor + 1 ms, checked on the measured p99 of each bus
and mode (``target.met``, ``target.p99_over_limit``, ``target.p99_over_floor``).

Writes ``{"results": {bus: {mode: {...}}}, "floor": {bus: {...}}, "machine": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hilserl_drivers.bus_emulator import EMULATORS
from hilserl_drivers.servo_tables import ModelSpec, model_spec
from hilserl_drivers.motor_bus import ArmCalibration, JointCalibration, make_bus

ROOT = Path(__file__).resolve().parents[1]
BAUD_RATE = 1_000_000
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
IDS = (1, 2, 3, 4, 5, 6)
MODELS = ("xl330-m288", "xl430-w250", "sts3215")
MODES = ("emulator_in_process", "emulator_subprocess")
READ_REGISTERS = ("Present Position",)  # + the model's velocity and effort registers
GOAL_REGISTER = "Goal Position"
SINE_AMPLITUDE_RAD = 0.3
SINE_PERIOD_S = 2.0
WARMUP_TICKS = 20
PACKET_TIMEOUT_S = 0.1  # beyond the transmission time, as in test_motor_bus: a busy machine's scheduling
TARGET_FLOOR_FACTOR = 2.0
TARGET_SLACK_MS = 1.0


# ------------------------------------------------------------------ byte floor
@dataclasses.dataclass(frozen=True)
class Framing:
    """Bytes of a protocol's packet around its parameters (instruction) or data (status)."""

    instruction_overhead: int
    status_overhead: int
    address_bytes: int
    """Bytes of the start address and of the data length in a sync read/write."""
    layout: str


FRAMING = {
    # Dynamixel Protocol 2.0: FF FF FD 00, ID, LEN_L LEN_H, instruction, ..., CRC_L CRC_H;
    # a status packet: the same with instruction 0x55 then an error byte before the data.
    "dynamixel": Framing(instruction_overhead=10, status_overhead=11, address_bytes=2,
                         layout="header 4 + id 1 + length 2 + instruction 1 (+ error 1 in a status) + crc 2"),
    # Feetech SCS/STS: FF FF, ID, LEN, instruction, ..., checksum; a status packet has the
    # error byte where the instruction was.
    "feetech": Framing(instruction_overhead=6, status_overhead=6, address_bytes=1,
                       layout="header 2 + id 1 + length 1 + instruction or error 1 + checksum 1"),
}


def read_block(spec: ModelSpec) -> tuple[int, int]:
    """(start address, length) of the one block ``read_state`` reads: position, velocity, effort."""
    spans = [spec.address(name) for name in (*READ_REGISTERS, spec.velocity_register, spec.effort_register)]
    start = min(a for a, _ in spans)
    return start, max(a + s for a, s in spans) - start


def byte_floor(spec: ModelSpec, motors: int, baud_rate: int = BAUD_RATE) -> dict:
    """Bytes per tick of each packet for ``motors`` motors of ``spec`` and their time on the wire."""
    frame = FRAMING[spec.protocol]
    start, length = read_block(spec)
    _, goal_size = spec.address(GOAL_REGISTER)
    sync_read = frame.instruction_overhead + 2 * frame.address_bytes + motors
    status = frame.status_overhead + length
    sync_write = frame.instruction_overhead + 2 * frame.address_bytes + motors * (1 + goal_size)
    total = sync_read + motors * status + sync_write
    us_per_byte = BITS_PER_BYTE * 1e6 / baud_rate
    return_delay = spec.defaults.get("Return Delay Time", 0) * 2  # 2 us per unit on both protocols
    return {
        "baud_rate": baud_rate, "bits_per_byte": BITS_PER_BYTE, "us_per_byte": us_per_byte,
        "framing": frame.layout,
        "read_block": {"registers": [*READ_REGISTERS, spec.velocity_register, spec.effort_register],
                       "start_address": start, "length": length},
        "goal_register_bytes": goal_size,
        "bytes": {
            "sync_read": sync_read,
            "sync_read_arithmetic": f"{frame.instruction_overhead} + {2 * frame.address_bytes} (address, length) "
                                    f"+ {motors} ids",
            "status_each": status,
            "status_arithmetic": f"{frame.status_overhead} + {length} data",
            "status_all": motors * status,
            "sync_write": sync_write,
            "sync_write_arithmetic": f"{frame.instruction_overhead} + {2 * frame.address_bytes} (address, length) "
                                     f"+ {motors} x (1 id + {goal_size} goal)",
            "total": total,
            "total_arithmetic": f"{sync_read} + {motors} x {status} + {sync_write}",
        },
        "floor_ms": total * us_per_byte / 1e3,
        "return_delay_at_spec_default_ms": motors * return_delay / 1e3,
        "return_delay_note": f"Return Delay Time default {spec.defaults.get('Return Delay Time', 0)} x 2 us per "
                             "status packet; not in the floor (set it to 0 on a real arm)",
    }


# ------------------------------------------------------------------ the rigs
def counting(emulator_cls: type) -> type:
    """``emulator_cls`` that counts the bytes it reads and writes and the time it spends answering."""

    class CountingEmulator(emulator_cls):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.bytes_in = self.bytes_out = 0
            self.busy_s = 0.0

        def _receive(self, data: bytes) -> None:
            start = time.perf_counter()
            self.bytes_in += len(data)
            super()._receive(data)
            self.busy_s += time.perf_counter() - start

        def _write(self, data: bytes) -> None:
            self.bytes_out += len(data)
            super()._write(data)

    CountingEmulator.__name__ = CountingEmulator.__qualname__ = f"Counting{emulator_cls.__name__}"
    return CountingEmulator


def calibration(model: str) -> ArmCalibration:
    """Every joint's zero at the emulator's start position (2048), full range, directions alternating."""
    return ArmCalibration(model, tuple(
        JointCalibration(name=f"joint{i}", id=i, homing_offset=2048, direction=1 if i % 2 else -1,
                         min_ticks=0, max_ticks=4095) for i in IDS))


class SubprocessEmulator:
    """``python -m hilserl_drivers.bus_emulator`` in its own process; ``port`` once it serves."""

    def __init__(self, protocol: str, model: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hilserl_drivers.bus_emulator", protocol, "--model", model,
             "--ids", *map(str, IDS)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.port = self.proc.stdout.readline().strip()
        if not self.port.startswith("/dev/"):
            self.close()
            raise RuntimeError(f"bus_emulator {protocol} {model} did not print its pty (got {self.port!r}, "
                               f"exit code {self.proc.returncode})")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def percentiles(values_ms: list[float]) -> dict:
    values = np.asarray(values_ms)
    return {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max()), "mean": float(values.mean())}


def run_ticks(bus, ticks: int, floor_ms: float, emulator=None) -> dict:
    """``ticks`` back-to-back read_state + write_goals on a connected bus with torque on;
    ``floor_ms``: the bus's byte-time floor, for the target check."""
    phases = np.arange(len(IDS)) * (2 * math.pi / len(IDS))

    def goals(t: float) -> np.ndarray:
        return SINE_AMPLITUDE_RAD * np.sin(2 * math.pi * t / SINE_PERIOD_S + phases)

    begin = time.perf_counter()
    for _ in range(WARMUP_TICKS):
        bus.read_state()
        bus.write_goals(goals(time.perf_counter() - begin))
    bus.read_state()  # its answer means the emulator has handled every packet before it
    tick_ms, read_ms, write_ms, busy_ms = [], [], [], []
    stale = 0
    low, high = np.full(len(IDS), np.inf), np.full(len(IDS), -np.inf)
    if emulator:
        before = (emulator.bytes_in, emulator.bytes_out, emulator.busy_s)
        packets = emulator.stats.packets
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(ticks):
        busy = emulator.busy_s if emulator else 0.0
        goal = goals(time.perf_counter() - begin)
        t0 = time.perf_counter()
        state = bus.read_state()
        t1 = time.perf_counter()
        bus.write_goals(goal)
        t2 = time.perf_counter()
        tick_ms.append((t2 - t0) * 1e3)
        read_ms.append((t1 - t0) * 1e3)
        write_ms.append((t2 - t1) * 1e3)
        if emulator:
            busy_ms.append((emulator.busy_s - busy) * 1e3)
        stale += state.stale
        low, high = np.minimum(low, state.position), np.maximum(high, state.position)
    seconds = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu_start) / ticks * 1e3
    result = {
        "ticks": ticks, "seconds": seconds, "ticks_per_second": ticks / seconds,
        # CPU of this process per tick: the driver's own with the emulator in a subprocess (the
        # SDKs' wait for a status packet sleeps in select(), motor_bus.TimedPortHandler.readPort)
        "process_cpu_ms_per_tick": cpu_ms,
        "tick_ms": percentiles(tick_ms), "read_state_ms": percentiles(read_ms), "write_goals_ms": percentiles(write_ms),
        "stale_ticks": int(stale),
        "position_span_rad": [float(v) for v in high - low],
        "target": target(tick_ms, floor_ms),
    }
    if emulator:
        deadline = time.monotonic() + 1.0
        while emulator.stats.packets - packets < 2 * ticks and time.monotonic() < deadline:
            time.sleep(0.001)  # the last sync write has no answer: wait until the emulator took it
        bytes_in, bytes_out, busy_s = (now - then for now, then in zip(
            (emulator.bytes_in, emulator.bytes_out, emulator.busy_s), before))
        # The sync write of one tick is handled while the next tick's read is on its way:
        # per-tick busy times are attributed to the tick in which they ended.
        result["emulator_busy_ms"] = percentiles(busy_ms)
        result["emulator_share"] = busy_s / seconds
        result["bytes_seen_per_tick"] = {"to_servos": bytes_in / ticks, "from_servos": bytes_out / ticks,
                                         "total": (bytes_in + bytes_out) / ticks}
    return result


def bench_bus(model: str, mode: str, ticks: int, floor_ms: float) -> dict:
    spec = model_spec(model)
    emulator_cls = EMULATORS[spec.protocol]
    if mode == "emulator_in_process":
        emulator = counting(emulator_cls)(IDS, model).start()
    else:
        emulator = SubprocessEmulator(spec.protocol, model)
    try:
        bus = make_bus(emulator.port, calibration(model), baud_rate=BAUD_RATE, packet_timeout_s=PACKET_TIMEOUT_S)
        with bus:
            bus.set_torque(True)
            return run_ticks(bus, ticks, floor_ms, emulator if mode == "emulator_in_process" else None)
    finally:
        emulator.close()


def target(tick_ms: list[float], floor_ms: float) -> dict:
    """Issue 10's check on the measured ticks: p99 <= 2 x floor + 1 ms."""
    limit = TARGET_FLOOR_FACTOR * floor_ms + TARGET_SLACK_MS
    p99_ms = float(np.percentile(tick_ms, 99))
    return {"limit_ms": limit, "met": p99_ms <= limit, "p99_over_limit": p99_ms / limit,
            "ticks_over_limit_fraction": float(np.mean(np.asarray(tick_ms) > limit)),
            "p99_over_floor": p99_ms / floor_ms,
            "estimated_real_tick_p99_ms": p99_ms + floor_ms,
            "estimated_real_met": p99_ms + floor_ms <= limit}


def machine() -> dict:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "load_average": list(os.getloadavg()),
            "dynamixel_sdk": version("dynamixel-sdk"), "feetech_servo_sdk": version("feetech-servo-sdk"),
            "pyserial": version("pyserial"),
            "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_bench(ticks: int, models=MODELS, modes=MODES, quick: bool = False) -> dict:
    """Every bus in every mode; the report written as JSON."""
    results, floors = {}, {}
    for model in models:
        floors[model] = byte_floor(model_spec(model), len(IDS))
        results[model] = {}
        for mode in modes:
            r = bench_bus(model, mode, ticks, floors[model]["floor_ms"])
            results[model][mode] = r
            t = r["tick_ms"]
            print(f"{model:11s} {mode:20s} tick p50 {t['p50']:6.3f}  p99 {t['p99']:6.3f}  max {t['max']:7.3f} ms  "
                  f"{r['ticks_per_second']:7.0f} ticks/s  cpu {r['process_cpu_ms_per_tick']:.2f} ms/tick  floor {floors[model]['floor_ms']:.3f} ms  "
                  f"target <= {r['target']['limit_ms']:.3f} ms: {'met' if r['target']['met'] else 'NOT met'} "
                  f"({r['target']['ticks_over_limit_fraction']:.1%} of ticks over)",
                  flush=True)
    return {
        "results": results, "floor": floors,
        "target": f"tick p99 <= {TARGET_FLOOR_FACTOR:g} x byte-time floor + {TARGET_SLACK_MS:g} ms (issue 10)",
        "config": {"ticks": ticks, "warmup_ticks": WARMUP_TICKS, "motors": len(IDS), "quick": quick,
                   "goals": f"{SINE_AMPLITUDE_RAD} rad sine, {SINE_PERIOD_S} s period, phase 60 deg per joint",
                   "emulator_speed_ticks_per_s": 2000.0, "packet_timeout_s": PACKET_TIMEOUT_S,
                   "ticks_paced": False},
        "note": "a pty has no baud rate: tick_ms is software overhead (SDK + driver + kernel pty + emulator) on "
                "this machine; floor_ms is what a real 1 Mbaud bus adds on top",
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="200 ticks per bus and mode (default 2000)")
    parser.add_argument("--ticks", type=int, default=None, help="ticks per bus and mode (overrides --quick)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args(argv)
    ticks = args.ticks if args.ticks is not None else (200 if args.quick else 2000)
    if ticks < 1:
        parser.error(f"--ticks must be >= 1, got {ticks}")
    report = run_bench(ticks, args.models, args.modes, quick=args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
