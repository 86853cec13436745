"""A leader arm: a second Dynamixel/Feetech arm, read through the drivers' bus layer.

The leader is the same kind of arm as the follower (``hilserl_drivers.arms``: same joints,
same kinematic model), on its own bus. Two phases:

- **Following** (``active`` False, the policy acts): torque on, and every read writes the
  follower's joint positions as the leader's goals, so the leader sits where the follower is.
  The goals move at most ``max_leader_joint_step`` per read (a leader far from the follower,
  e.g. at start, comes over slowly; it never jumps). A hand on the leader shows as a position
  error: ``|measured - goal| > takeover_error_rad`` on any joint for ``takeover_ticks``
  consecutive reads is a take-over.
- **Driving** (``active`` True, the person acts): the leader's torque is turned OFF, so the
  person moves it freely (a leader left alone then rests where gravity puts it: a light,
  backdrivable leader such as the Koch/SO-101 leader builds stays put; a heavy one sags, and
  the follower follows the sag). The deltas are the translation from the follower's end
  effector to the leader's, ``FK(leader joints) - FK(follower joints)`` through the same
  kinematics (the leader's end effector clamped into the arm's bounds box, the box the
  follower's chain keeps it in; the follower's end effector taken as its target, the commands
  sent integrated as the follower integrates them: its state is a tick old; re-anchored to the
  measured end effector when that estimate says "arrived" twice while the follower is still
  farther than ``release_distance_m``, e.g. an IK that fell short), divided by ``max_step_translation`` and scaled down as a whole vector when any
  component exceeds 1 (the direction stays straight toward the leader). Below
  ``position_deadband_m`` they are 0. Rotation deltas are 0: a yaw delta computed from the
  measured orientations would wind up the follower's rpy target whenever its IK (a low
  orientation cost) does not reach it, and ``step_target`` has no anti wind-up on rpy.
  The gripper is closed/opened from the leader's gripper joint, with hysteresis
  (``gripper_close_below`` / ``gripper_open_above``, fractions of the span from closed to open).
  ``toggle_intervention`` stays False: ``active`` hands control to the human.
- **Release**: the leader has moved at most ``release_motion_rad`` (every joint, per read) for
  ``release_ticks`` consecutive reads AND the follower has caught up (its end effector within
  ``release_distance_m`` of the leader's, clamped into the box) -> following again: the leader's goals are first set
  to its measured position, then torque on (it does not jump), then the goals walk to the
  follower's joints at ``max_leader_joint_step`` per read.

Why the switch never jumps: while the policy acts the leader is where the follower is, so at
the take-over the deltas start from ~0 and grow only as fast as the hand moves the leader; the
follower's own chain (``step_target``, ``limit_joint_step``) bounds every step by its
per-step limit anyway. At the release the follower already stands at the leader's pose and
the policy resumes from the measured arm.

Pacing: one bus read per ``read`` call, at most one every ``read_period_s``; ``read`` sleeps
until that slot (never spins) and returns None if the slot is beyond its timeout.

Gains: on a Dynamixel leader, ``position_p_gain`` (> 0) is written to Position P Gain
(address 84, 2 bytes, RAM) of every motor at ``open``, so the leader yields to a hand while
it follows. This goes through the bus's own sync write (a private method of
``motor_bus._SdkBus``; the bus has no public register write). On a Feetech leader it is not
done: the STS3215 P Coefficient lives in the EEPROM area (lock handling); tune it once with
the vendor tool. No button: a take-over by button comes from another device through the mux.

A bus failure (a motor gone for ``max_missed_reads`` reads, a failed write, a motor flagging
a hardware error) raises ``DeviceError`` naming the motor. No ROS here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from hilserl_drivers.real_arm import TORQUE_TRIES
from hilserl_teleop.devices.base import (
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    GRIPPER_STAY,
    DeviceError,
    DeviceReader,
    HumanCommand,
)

_log = logging.getLogger(__name__)

PARAMETERS: dict[str, tuple[object, str]] = {
    "arm": ("so101", "the leader's arm (hilserl_drivers.arms: so101 | koch); the same kinematics as the follower"),
    "port": ("", "serial port of the leader's servo bus, e.g. /dev/ttyACM1 (or an emulator's pty)"),
    "calibration": ("", "the leader's calibration YAML (calibrate_arm); its joints must be the arm's"),
    "baud_rate": (1_000_000, "bus baud rate"),
    "mjcf": ("", "kinematic model of the arm; empty: the one shipped for `arm`"),
    "packet_timeout_s": (0.02, "wait for a status packet beyond its transmission time (s)"),
    "max_missed_reads": (3, "consecutive reads a motor may miss before DeviceError names it"),
    "read_period_s": (0.1, "at most one bus read per this many seconds (a read call sleeps until its slot)"),
    "takeover_error_rad": (0.15, "|measured - goal| on any joint (rad) that means a hand is on the leader"),
    "takeover_ticks": (3, "consecutive reads past takeover_error_rad that make a take-over"),
    "release_ticks": (10, "consecutive still reads (and the follower caught up) that end a take-over"),
    "release_motion_rad": (0.01, "largest joint motion per read (rad) that still counts as 'the leader is still'"),
    "release_distance_m": (0.01, "the follower's end effector must be this close to the leader's to release (m)"),
    "max_step_translation": (0.015, "the follower's per-step translation limit (m): a delta of 1"),
    "max_tracking_error": (0.015, "the follower's max_tracking_error (m): how far its target may lead its end "
                                  "effector (the reader integrates its own commands the same way)"),
    "position_deadband_m": (0.002, "leader-follower end-effector distances below this give zero deltas (m)"),
    "max_leader_joint_step": (0.1, "largest change of the leader's goals per read while it follows (rad)"),
    "gripper_close_below": (0.35, "leader gripper opening (0 closed .. 1 open) below which the command is close"),
    "gripper_open_above": (0.65, "leader gripper opening above which the command is open"),
    "position_p_gain": (0, "Dynamixel Position P Gain written to every leader motor at open (0: leave it; "
                           "the XL330 default is 400)"),
}


@dataclasses.dataclass(frozen=True)
class LeaderArmConfig:
    """The parameters, read once and validated (see ``PARAMETERS`` for each one)."""

    arm: str = "so101"
    port: str = ""
    calibration: str = ""
    baud_rate: int = 1_000_000
    mjcf: str = ""
    packet_timeout_s: float = 0.02
    max_missed_reads: int = 3
    read_period_s: float = 0.1
    takeover_error_rad: float = 0.15
    takeover_ticks: int = 3
    release_ticks: int = 10
    release_motion_rad: float = 0.01
    release_distance_m: float = 0.01
    max_step_translation: float = 0.015
    max_tracking_error: float = 0.015
    position_deadband_m: float = 0.002
    max_leader_joint_step: float = 0.1
    gripper_close_below: float = 0.35
    gripper_open_above: float = 0.65
    position_p_gain: int = 0

    def __post_init__(self) -> None:
        positive = ("packet_timeout_s", "read_period_s", "takeover_error_rad", "release_motion_rad",
                    "release_distance_m", "max_step_translation", "max_tracking_error", "max_leader_joint_step")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"leader_arm.{name} must be a number > 0, got {value!r}")
        if not (math.isfinite(self.position_deadband_m) and 0 <= self.position_deadband_m < self.release_distance_m):
            raise ValueError(f"leader_arm.position_deadband_m must be in [0, release_distance_m "
                             f"({self.release_distance_m})), got {self.position_deadband_m!r}")
        for name in ("takeover_ticks", "release_ticks", "max_missed_reads", "baud_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"leader_arm.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 <= self.gripper_close_below < self.gripper_open_above <= 1.0:
            raise ValueError(f"leader_arm.gripper_close_below ({self.gripper_close_below}) must be below "
                             f"gripper_open_above ({self.gripper_open_above}), both in [0, 1]")
        if isinstance(self.position_p_gain, bool) or not isinstance(self.position_p_gain, int) \
                or not 0 <= self.position_p_gain <= 16383:
            raise ValueError(f"leader_arm.position_p_gain must be an integer in 0..16383, got {self.position_p_gain!r}")


def ee_deltas(leader_ee: np.ndarray, follower_ee: np.ndarray, max_step_translation: float,
              deadband_m: float = 0.0) -> np.ndarray:
    """Six normalised deltas taking the follower's end effector toward the leader's: the
    translation over ``max_step_translation``, scaled down as a whole (direction kept) so no
    component exceeds 1; zero below ``deadband_m``; rotation 0."""
    offset = np.asarray(leader_ee, dtype=float) - np.asarray(follower_ee, dtype=float)
    out = np.zeros(6)
    if not np.all(np.isfinite(offset)) or np.linalg.norm(offset) < deadband_m:
        return out
    translation = offset / max_step_translation
    largest = float(np.max(np.abs(translation)))
    out[:3] = translation / largest if largest > 1.0 else translation
    return out


class GripperHysteresis:
    """Close below ``close_below``, open above ``open_above``, else keep the last command."""

    def __init__(self, close_below: float, open_above: float) -> None:
        self.close_below, self.open_above = close_below, open_above
        self.state = GRIPPER_STAY

    def reset(self, opening: float) -> None:
        """Start from the middle of the band (the leader's gripper when the person takes over)."""
        if not math.isfinite(opening):
            self.state = GRIPPER_STAY
        else:
            self.state = GRIPPER_CLOSE if opening < 0.5 * (self.close_below + self.open_above) else GRIPPER_OPEN

    def update(self, opening: float) -> int:
        if math.isfinite(opening):
            if opening < self.close_below:
                self.state = GRIPPER_CLOSE
            elif opening > self.open_above:
                self.state = GRIPPER_OPEN
        return self.state


class LeaderArmReader(DeviceReader):
    """A leader arm (see the module docstring). ``bus`` (``motor_bus.MotorBus``, not connected)
    and ``spec`` (``arms.RealArmSpec``) are built by ``make_reader``; tests pass their own."""

    name = "leader_arm"

    def __init__(self, config: LeaderArmConfig, spec, bus, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        from hilserl_drivers.real_arm import check_calibration

        check_calibration(spec, bus.calibration, source=config.calibration or "leader calibration")
        self.config = config
        self.spec = spec
        self.bus = bus
        self._clock, self._sleep = clock, sleep
        self._ik = spec.kinematics(config.mjcf)
        self._n = len(spec.arm_joints)
        self._gripper = GripperHysteresis(config.gripper_close_below, config.gripper_open_above)
        self.active = False
        """The person drives (take-over detected, not yet released)."""
        self.follower: np.ndarray | None = None
        """The follower's joint positions (rad, the spec's joint order), from ``follow``."""
        self.goal: np.ndarray | None = None
        """The leader's goals last written (rad, as the bus sent them: clipped and rounded to ticks)."""
        self.position: np.ndarray | None = None
        """The leader's last measured joint positions (rad)."""
        self.torque_on = False
        self._over = 0
        self._still = 0
        self._short = 0
        self._target: np.ndarray | None = None
        """The follower's end-effector target as the commands sent move it (while active)."""
        self._next_read = -math.inf

    # ------------------------------------------------------------- lifecycle
    def open(self) -> None:
        from hilserl_drivers.motor_bus import MotorBusError

        try:
            self.bus.connect()
            if self.config.position_p_gain:
                self._write_p_gain(self.config.position_p_gain)
            state = self._read_state()
            self._write_goals(state.position)  # hold where it is before torque on: no jump
            self.bus.set_torque(True, tries=TORQUE_TRIES)
        except MotorBusError as exc:
            self.bus.close()
            raise DeviceError(f"leader_arm on {self.config.port or self.bus.port_name}: {exc}") from None
        self.torque_on, self.active, self._over, self._still = True, False, 0, 0
        self._next_read = -math.inf

    def close(self) -> None:
        """Torque off (a person-held device: it goes limp), then close the port. Safe twice."""
        from hilserl_drivers.motor_bus import MotorBusError

        if self.bus.connected:
            try:
                self.bus.set_torque(False, tries=TORQUE_TRIES)
            except (MotorBusError, OSError) as exc:
                _log.warning("leader_arm: torque off on close: %s", exc)
        self.torque_on = False
        self.bus.close()

    def follow(self, joint_names: Sequence[str], joint_positions: Sequence[float],
               ee_position: Sequence[float] | None = None) -> None:
        """Store the follower's joints (by name, in the spec's order); other names are ignored."""
        by_name = dict(zip(joint_names, (float(v) for v in joint_positions)))
        missing = [j for j in self.spec.joints if j not in by_name]
        if missing:
            raise ValueError(f"leader_arm.follow: the follower's joint state lacks {missing}")
        q = np.array([by_name[j] for j in self.spec.joints])
        if np.all(np.isfinite(q)):
            self.follower = q

    # ------------------------------------------------------------------ read
    def read(self, timeout_s: float) -> HumanCommand | None:
        from hilserl_drivers.motor_bus import MotorBusError

        wait = self._next_read - self._clock()
        if wait > timeout_s:
            self._sleep(max(0.0, timeout_s))
            return None
        if wait > 0:
            self._sleep(wait)
        self._next_read = max(self._clock(), self._next_read) + self.config.read_period_s
        try:
            return self._tick()
        except MotorBusError as exc:
            raise DeviceError(f"leader_arm on {self.bus.port_name}: {exc}") from None

    def _tick(self) -> HumanCommand | None:
        state = self._read_state()
        q = state.position
        if state.stale or not np.all(np.isfinite(q)):
            return None  # a motor missed this read: nothing new (max_missed_reads then names it)
        moved = math.inf if self.position is None else float(np.max(np.abs(q - self.position)))
        self.position = q.copy()
        if not self.active:
            return self._following(q, state.stamp)
        return self._driving(q, moved, state.stamp)

    def _following(self, q: np.ndarray, stamp: float) -> HumanCommand:
        error = float(np.max(np.abs(q - self.goal))) if self.goal is not None else 0.0
        self._over = self._over + 1 if error > self.config.takeover_error_rad else 0
        if self._over >= self.config.takeover_ticks:
            self.bus.set_torque(False, tries=TORQUE_TRIES)
            self.torque_on, self.active, self._over, self._still = False, True, 0, 0
            self._target, self._short = None, 0
            self._gripper.reset(self._opening(q))
            return self._driving(q, math.inf, stamp)
        if self.follower is not None:
            step = np.clip(self.follower - self.goal, -self.config.max_leader_joint_step,
                           self.config.max_leader_joint_step)
            self._write_goals(self.goal + step)
        return HumanCommand(np.zeros(6), GRIPPER_STAY, active=False, stamp=stamp)

    def _driving(self, q: np.ndarray, moved: float, stamp: float) -> HumanCommand:
        # the follower's chain keeps its end effector in the arm's bounds box: aim at (and release
        # against) the leader's pose clamped into that box, or a leader held outside it would never
        # be caught up with
        low, high = self.spec.limits.position_low, self.spec.limits.position_high
        leader_ee = np.clip(self.forward(q), low, high)
        if self.follower is None:
            deltas, distance = np.zeros(6), math.inf
        else:
            follower_ee = self.forward(self.follower)
            distance = float(np.linalg.norm(leader_ee - follower_ee))
            target = self._follower_target(follower_ee)
            deltas = ee_deltas(leader_ee, target, self.config.max_step_translation, self.config.position_deadband_m)
            if not np.any(deltas) and distance >= self.config.release_distance_m:
                self._short += 1  # the follower's target is not where ours is (a step limited downstream)
                if self._short >= 2:
                    self._target, self._short = follower_ee, 0
                    deltas = ee_deltas(leader_ee, follower_ee, self.config.max_step_translation,
                                       self.config.position_deadband_m)
            else:
                self._short = 0
            self._target = np.clip(self._target + deltas[:3] * self.config.max_step_translation, low, high)
        gripper = self._gripper.update(self._opening(q))
        self._still = self._still + 1 if moved <= self.config.release_motion_rad else 0
        if self._still >= self.config.release_ticks and distance < self.config.release_distance_m:
            self._write_goals(q)  # the goal first equals the measured position: torque on does not move it
            self.bus.set_torque(True, tries=TORQUE_TRIES)
            self.torque_on, self.active, self._over, self._still = True, False, 0, 0
            return HumanCommand(np.zeros(6), GRIPPER_STAY, active=False, stamp=stamp)
        return HumanCommand(deltas, gripper, active=True, stamp=stamp)

    def _follower_target(self, follower_ee: np.ndarray) -> np.ndarray:
        """Where the follower's end-effector target is: the commands sent so far, integrated as
        its ``step_target`` does (kept within ``max_tracking_error`` of the measured end effector).
        The follower's state is a tick old when the deltas reach it; deltas computed from the
        measured end effector would count the step still under way twice (overshoot, then a
        step back: a zig-zag at full speed)."""
        if self._target is None:
            self._target = follower_ee.copy()
        offset = self._target - follower_ee
        distance = float(np.linalg.norm(offset))
        if distance > self.config.max_tracking_error:
            self._target = follower_ee + offset * (self.config.max_tracking_error / distance)
        return self._target

    # --------------------------------------------------------------- helpers
    def forward(self, q: Sequence[float]) -> np.ndarray:
        """End-effector position (base frame, m) of joint positions (the arm joints come first)."""
        position, _ = self._ik.forward(np.asarray(q, dtype=float)[:self._n])
        return position

    def _opening(self, q: np.ndarray) -> float:
        return self.spec.gripper_opening(q[-1])

    def _read_state(self):
        state = self.bus.read_state(self.config.read_period_s)
        state.raise_on_hardware_error()
        return state

    def _write_goals(self, q: np.ndarray) -> None:
        ticks = self.bus.write_goals(q)
        self.goal = self.bus.calibration.ticks_to_radians(ticks)

    def _write_p_gain(self, gain: int) -> None:
        spec = self.bus.spec
        if self.bus.protocol != "dynamixel" or "Position P Gain" not in spec.registers:
            _log.warning("leader_arm: position_p_gain is only written on Dynamixel motors; %s left as it is",
                         spec.name)
            return
        self.bus.write_register("Position P Gain", gain)


def make_reader(values: dict) -> LeaderArmReader:
    """A reader from the node's parameter values (``PARAMETERS`` names); ValueError (or
    ``CalibrationError``) naming the parameter or the file when one is wrong."""
    from hilserl_drivers.arms import arm_spec
    from hilserl_drivers.motor_bus import ArmCalibration, make_bus

    known = {f.name for f in dataclasses.fields(LeaderArmConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"leader_arm: unknown parameters {unknown}")
    config = LeaderArmConfig(**{k: v for k, v in values.items()})
    spec = arm_spec(config.arm)
    if not config.port:
        raise ValueError("leader_arm.port is empty: give the leader's serial port, e.g. /dev/ttyACM1")
    if not config.calibration:
        raise ValueError("leader_arm.calibration is empty: run calibrate_arm on the leader and give its YAML")
    calibration = ArmCalibration.load(config.calibration)
    bus = make_bus(config.port, calibration, baud_rate=config.baud_rate, packet_timeout_s=config.packet_timeout_s,
                   max_missed_reads=config.max_missed_reads)
    return LeaderArmReader(config, spec, bus)
