"""Guided calibration of an arm from the command line: homing offset, direction and range per joint.

    python -m hilserl_drivers.calibrate --arm so101 --port /dev/ttyACM0 --out config/arm_calibration.yaml
    python -m hilserl_drivers.calibrate --bus dynamixel --model xl330 --port /dev/ttyUSB0 \\
        --ids 1 2 3 4 5 6 --names shoulder_pan shoulder_lift elbow_flex wrist_flex wrist_roll gripper \\
        --directions 1 1 -1 1 1 1 --out config/arm_calibration.yaml

The procedure (``run_calibration``):

1. open the port and ping every motor, checking its model number (a missing motor or
   another model is refused, naming the motor, before anything is written to the bus);
2. torque off on every motor, so the arm can be moved by hand;
3. "move every joint to the middle of its range, then press Enter": the raw reading of
   each motor there is its homing offset (the joint's zero);
4. "move every joint through its whole range, then press Enter": positions are sampled
   every ``sample_period_s`` in a thread while the prompt waits (a live table on a
   terminal), and the lowest and highest readings are the joint's range; a joint that
   moved less than ``min_travel_deg`` is refused by name, and so is one whose reading
   jumped by half a revolution (its range crosses the encoder's 0 / 4095 seam, which a
   ``min_ticks`` .. ``max_ticks`` range cannot describe);
5. directions come from ``--directions`` (default +1 each): which way the joint turns
   is a convention of the arm's model, not something the motors can tell.

Raw ticks are read through the bus itself, with a provisional calibration whose homing
offsets are 0 and directions +1 (and full ranges): its radians are the raw reading times
2 pi / ticks_per_rev, and its own ``radians_to_ticks`` turns them back exactly.

The file is written with ``ArmCalibration.save`` (through a temporary file beside it, so
a crash leaves no half file); an existing file is kept unless ``--force``. Ctrl-C exits
130 with nothing written and the port closed; any other failure prints one line naming
the motor or joint at fault and exits 2.

One servo model per bus (``ArmCalibration`` holds one): a Koch built with XL430-W250s
only is ``--arm koch --model xl430``; a Koch v1.1 whose first joints are XL430-W250s and
the rest XL330-M288s is not supported yet. Not done here: writing the
calibration into the motors' own registers (Homing Offset, position limits).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np

from hilserl_drivers.servo_tables import model_spec
from hilserl_drivers.arms import ARMS, JOINTS
from hilserl_drivers.motor_bus import (
    BUSES,
    UNITS,
    ArmCalibration,
    CalibrationError,
    JointCalibration,
    MotorBus,
    MotorBusError,
    make_bus,
)

MIDDLE_PROMPT = "Move every joint to the middle of its range, then press Enter."
RANGE_PROMPT = "Move every joint through its whole range, then press Enter when done."

def provisional_calibration(model: str, ids: Sequence[int], names: Sequence[str]) -> ArmCalibration:
    """Offset 0, direction +1, full range: the bus then reads raw ticks (in radians) and connect() checks the motors."""
    name = model_spec(model).name
    if name not in UNITS:
        raise CalibrationError(f"model {name!r} has no unit scales in motor_bus.UNITS")
    ticks_per_rev = UNITS[name].ticks_per_rev
    return ArmCalibration(model, tuple(JointCalibration(name=n, id=int(i), homing_offset=0, direction=1,
                                                        min_ticks=0, max_ticks=ticks_per_rev - 1)
                                       for n, i in zip(names, ids)))


def read_raw(bus: MotorBus, require_fresh: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Raw Present Position (int ticks) and freshness of every motor of a bus on a ``provisional_calibration``.

    ``require_fresh``: a motor that did not answer raises ``MotorBusError`` naming it;
    otherwise its ticks are meaningless and ``fresh`` says so (the bus itself raises once
    a motor missed ``max_missed_reads`` reads in a row).
    """
    state = bus.read_state()
    if require_fresh and state.stale:
        raise MotorBusError(f"{type(bus).__name__} on {bus.port_name}: " + "; ".join(
            f"motor {i} (joint {bus.calibration.joint_of(i).name!r}): {state.reasons[i]}" for i in state.failed_ids))
    ticks = np.rint(bus.calibration.radians_to_ticks(np.nan_to_num(state.position))).astype(int)
    return ticks, state.fresh


class RangeRecorder:
    """Lowest and highest raw reading per joint, and the joints whose reading jumped half a revolution."""

    def __init__(self, start: np.ndarray, ticks_per_rev: int) -> None:
        self.low = np.array(start, dtype=int)
        self.high = np.array(start, dtype=int)
        self.last = np.array(start, dtype=int)
        self.wrapped = np.zeros(len(self.low), dtype=bool)
        self._half = ticks_per_rev // 2

    def add(self, ticks: np.ndarray, fresh: np.ndarray) -> None:
        """Record the joints whose reading is ``fresh``; the others keep their values."""
        ticks = np.where(fresh, ticks, self.last)
        self.wrapped |= np.abs(ticks - self.last) > self._half
        self.last = ticks
        self.low = np.minimum(self.low, ticks)
        self.high = np.maximum(self.high, ticks)


class LiveTable:
    """Current / min / max per joint, redrawn in place on a terminal (nothing elsewhere), at most 10 times a second."""

    def __init__(self, out: TextIO | None, names: Sequence[str], period_s: float = 0.1) -> None:
        self._out = out if out is not None and out.isatty() else None
        self._names = list(names)
        self._period_s = period_s
        self._drawn = False
        self._next = 0.0

    def show(self, recorder: RangeRecorder) -> None:
        now = time.monotonic()
        if self._out is None or now < self._next:
            return
        self._next = now + self._period_s
        width = max(len(n) for n in self._names)
        lines = [f"  {name:<{width}}  now {cur:5d}   min {lo:5d}   max {hi:5d}"
                 for name, cur, lo, hi in zip(self._names, recorder.last, recorder.low, recorder.high)]
        up = f"\x1b[{len(lines)}A" if self._drawn else ""
        self._out.write(up + "".join(f"\r\x1b[K{line}\n" for line in lines))
        self._out.flush()
        self._drawn = True


class _Sampler(threading.Thread):
    """Reads the bus every ``period_s`` into a ``RangeRecorder`` until stopped; keeps the first error."""

    def __init__(self, bus: MotorBus, recorder: RangeRecorder, period_s: float, table: LiveTable) -> None:
        super().__init__(name="calibration-sampler", daemon=True)
        self._bus, self._recorder, self._period_s, self._table = bus, recorder, period_s, table
        self._stop_event = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._recorder.add(*read_raw(self._bus, require_fresh=False))
            except MotorBusError as exc:
                self.error = exc
                print(f"\nerror while sampling: {exc}", file=sys.stderr, flush=True)
                return
            self._table.show(self._recorder)
            self._stop_event.wait(self._period_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_calibration(bus_factory: Callable[[ArmCalibration], MotorBus], model: str, ids: Sequence[int],
                    names: Sequence[str], prompt: Callable[[str], object], *,
                    directions: Sequence[int] | None = None, out: TextIO | None = None,
                    sample_period_s: float = 0.02, min_travel_deg: float = 20.0) -> ArmCalibration:
    """The guided procedure (see the module docstring); returns the calibration, writes nothing.

    ``bus_factory`` builds the (unconnected) bus for a calibration, e.g.
    ``lambda cal: make_bus(port, cal)``; ``prompt`` shows a step's instruction and returns
    when the person is done (``input`` on a terminal); ``out``: where the live table is
    drawn, if a terminal. The bus is closed on every way out, Ctrl-C included.
    """
    ids, names = [int(i) for i in ids], list(names)
    directions = [1] * len(ids) if directions is None else [int(d) for d in directions]
    if len(names) != len(ids) or len(directions) != len(ids):
        raise ValueError(f"{len(ids)} motor IDs {ids} need as many names (got {len(names)}) "
                         f"and directions (got {len(directions)})")
    provisional = provisional_calibration(model, ids, names)  # validates names and IDs
    for name, direction in zip(names, directions):
        if direction not in (1, -1):
            raise CalibrationError(f"joint {name!r}: direction must be 1 or -1, got {direction}")
    ticks_per_rev = provisional.units.ticks_per_rev
    bus = bus_factory(provisional)
    bus.connect()  # pings every motor and checks its model number; raises naming the motors at fault
    try:
        bus.set_torque(False)
        prompt(MIDDLE_PROMPT)
        middle, _ = read_raw(bus)
        for name, motor_id, tick in zip(names, ids, middle):
            if not 0 <= tick < ticks_per_rev:
                raise CalibrationError(f"joint {name!r} (motor {motor_id}) reads {tick} ticks, outside "
                                       f"0..{ticks_per_rev - 1}: is the motor in multi-turn mode?")
        recorder = RangeRecorder(middle, ticks_per_rev)
        sampler = _Sampler(bus, recorder, sample_period_s, LiveTable(out, names))
        sampler.start()
        try:
            prompt(RANGE_PROMPT)
        finally:
            sampler.stop()
        if sampler.error is not None:
            raise sampler.error
        recorder.add(*read_raw(bus, require_fresh=False))  # where the joints were when Enter was pressed
    finally:
        bus.close()
    check_ranges(names, recorder, ticks_per_rev, min_travel_deg)
    return ArmCalibration(provisional.model, tuple(
        JointCalibration(name=n, id=i, homing_offset=int(m), direction=d, min_ticks=int(lo), max_ticks=int(hi))
        for n, i, m, d, lo, hi in zip(names, ids, middle, directions, recorder.low, recorder.high)))


def check_ranges(names: Sequence[str], recorder: RangeRecorder, ticks_per_rev: int, min_travel_deg: float) -> None:
    """Raise ``CalibrationError`` naming every joint that moved too little or crossed the encoder's seam."""
    problems = []
    for name, lo, hi, wrapped in zip(names, recorder.low, recorder.high, recorder.wrapped):
        if wrapped:
            problems.append(f"joint {name!r} crossed the encoder's 0/{ticks_per_rev - 1} seam: its range cannot be "
                            "stored as min..max ticks (remount the horn so that the seam lies outside the range)")
            continue
        travel = (hi - lo) * 360.0 / ticks_per_rev
        if travel < min_travel_deg:
            problems.append(f"joint {name!r} moved only {travel:.1f}°; move it through its whole range")
    if problems:
        raise CalibrationError("; ".join(problems))


def write_calibration(calibration: ArmCalibration, path: str, force: bool = False) -> None:
    """Save through a temporary file beside ``path``; an existing ``path`` is kept unless ``force``."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        calibration.save(tmp)
        if force:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)  # atomic: fails if path exists
        except FileExistsError:
            raise FileExistsError(f"{path} exists; pass --force to overwrite it") from None
        except OSError:  # a file system without hard links
            if os.path.exists(path):
                raise FileExistsError(f"{path} exists; pass --force to overwrite it") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def describe(calibration: ArmCalibration) -> str:
    """One line per joint: motor, offset, range in ticks and in joint degrees, direction."""
    deg = 360.0 / calibration.units.ticks_per_rev
    width = max(len(n) for n in calibration.names)
    lines = []
    for j in calibration.joints:
        low, high = sorted(j.direction * (t - j.homing_offset) * deg for t in (j.min_ticks, j.max_ticks))
        lines.append(f"  {j.name:<{width}}  motor {j.id:3d}  offset {j.homing_offset:5d}  "
                     f"range {j.min_ticks:5d}..{j.max_ticks:5d} ticks ({low:+6.1f}° .. {high:+6.1f}°)  "
                     f"direction {j.direction:+d}")
    return "\n".join(lines)


def _terminal_prompt(text: str) -> str:
    print(text, flush=True)
    return input()


def main(argv: Sequence[str] | None = None, *, prompt: Callable[[str], object] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hilserl_drivers.calibrate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", choices=sorted(ARMS),
                        help="preset: so101 = feetech sts3215, IDs 1..6; koch = dynamixel xl330-m288 on every joint, "
                             "IDs 1..6; both named " + " ".join(JOINTS) + ". One model per bus: a Koch built "
                             "with XL430s only is --arm koch --model xl430; XL430s mixed with XL330s is not supported")
    parser.add_argument("--bus", choices=sorted(BUSES), help="protocol (default: the model's)")
    parser.add_argument("--model", help="servo model of every motor: xl330, xl430, sts3215 (or a full name)")
    parser.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyACM0")
    parser.add_argument("--baud", type=int, default=1_000_000, help="baud rate (default 1000000)")
    parser.add_argument("--packet-timeout", type=float, default=0.05,
                        help="seconds to wait for a motor's answer beyond its transmission time (default 0.05)")
    parser.add_argument("--ids", type=int, nargs="+", help="motor IDs in joint order")
    parser.add_argument("--names", nargs="+", help="joint names, one per ID")
    parser.add_argument("--directions", type=int, nargs="+", help="+1 or -1 per joint (default +1 each)")
    parser.add_argument("--min-travel", type=float, default=20.0, help="degrees each joint must move (default 20)")
    parser.add_argument("--out", required=True, help="calibration YAML to write (beside the arm's config)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = parser.parse_args(argv)

    preset = ARMS.get(args.arm)
    model = args.model or (preset.model if preset else None)
    ids = args.ids or (list(preset.ids) if preset else None)
    names = args.names or (list(preset.joints) if preset else None)
    if model is None or ids is None or names is None:
        parser.error("give --arm, or --model, --ids and --names")
    try:
        spec = model_spec(model)
    except ValueError as exc:
        parser.error(f"--model: {exc}")
    bus_name = args.bus or spec.protocol
    if spec.protocol != bus_name:
        parser.error(f"--bus {bus_name} does not speak to {spec.name}, a {spec.protocol} servo")
    if os.path.exists(args.out) and not args.force:
        print(f"calibrate: error: {args.out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        print(f"calibrate: error: the folder of {args.out} does not exist", file=sys.stderr)
        return 2
    if prompt is None:
        prompt = _terminal_prompt
        if threading.current_thread() is threading.main_thread():
            # A process started in the background by a non-interactive shell inherits SIGINT
            # ignored; Ctrl-C must still stop the procedure.
            signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        calibration = run_calibration(
            lambda cal: make_bus(args.port, cal, baud_rate=args.baud, packet_timeout_s=args.packet_timeout),
            model, ids, names, prompt, directions=args.directions, out=sys.stdout, min_travel_deg=args.min_travel)
        write_calibration(calibration, args.out, force=args.force)
    except KeyboardInterrupt:
        print("\ncalibrate: interrupted; nothing written", file=sys.stderr)
        return 130
    except EOFError:
        print("calibrate: error: input closed before the procedure ended; nothing written", file=sys.stderr)
        return 2
    except (MotorBusError, CalibrationError, ValueError, OSError) as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 2
    print(f"Calibration of {len(calibration.joints)} {calibration.model} motors written to {args.out}:")
    print(describe(calibration), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
