"""A real arm on its servo bus, without ROS: readings with forward kinematics, end-effector
commands through the same ``ee_control`` chain and mink IK as the simulator, homing, and
the safe stop.

One control tick of the driver node is ``read()`` then ``step()`` (a command), ``hold()``
(none, or a stale one) or ``home_step()`` (resetting):

- ``read()``: one sync read (``MotorBus.read_state``) -> joint positions, velocities and
  efforts, and the end effector's pose by forward kinematics of the arm's MJCF.
- ``step(deltas, gripper)``: the command is sanitised, the end-effector target moves by the
  scaled deltas, is clamped to the bounds box and kept near the measured end effector
  (``step_target``); IK gives joint goals whose forward kinematics is checked against the box
  and the step (``limit_joint_step``); the gripper goes to its open or closed goal; ONE sync
  write sends every goal. Before the first homing, commands are refused (hold): the target
  frame is only defined once the arm is at a known pose.
- ``home_step()``: every joint moves toward the home pose by at most ``home_joint_step``
  per tick (joint space, no IK); done when every joint is within ``home_tolerance``; then the
  end-effector target is the home pose.
- ``safe_stop(mode)``: ``"torque_off"`` writes Torque Enable 0 to every motor, one by one,
  each even after another failed; ``"hold"`` sends the measured positions as goals (torque
  stays on). Then the port is closed. Failures are returned as text, never raised: a stop
  must not be stopped by its own error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from hilserl_drivers.arms import RealArmSpec
from hilserl_drivers.ee_control import (
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    EndEffectorTarget,
    limit_joint_step,
    matrix_to_quat,
    sanitize_action,
    sanitize_gripper,
    step_target,
    target_rotation,
)
from hilserl_drivers.motor_bus import ArmCalibration, CalibrationError, MotorBus, MotorBusError

STOP_MODES = ("torque_off", "hold")
TORQUE_TRIES = 2
"""Torque Enable writes per motor at most (a lost status packet is not a failed motor); with a
motor gone, the stop waits 2 x the packet timeout for it before the port closes."""


class ArmReading(NamedTuple):
    """One read of the arm: joints in bus order (arm joints, gripper last), in the joint frame."""

    names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray
    effort_unit: str
    ee_position: np.ndarray
    ee_quaternion: np.ndarray
    """(w, x, y, z), base frame."""
    gripper_opening: float
    """0 closed .. 1 open."""
    stale: bool
    failed_ids: tuple[int, ...]
    reasons: dict
    error_ids: tuple[int, ...]


def check_calibration(spec: RealArmSpec, calibration: ArmCalibration, source: str = "calibration") -> None:
    """Refuse a calibration that is not for this arm, naming the joint or the model."""
    if calibration.names != spec.joints:
        raise CalibrationError(f"{source}: joints {list(calibration.names)} do not match the {spec.name} arm's "
                               f"{list(spec.joints)} (same names, bus order)")
    if calibration.spec.protocol != spec.bus:
        raise CalibrationError(f"{source}: model {calibration.model} is a {calibration.spec.protocol} servo; "
                               f"the {spec.name} arm is on a {spec.bus} bus")


class RealArm:
    """One arm: its bus (connected by the caller), kinematics and control state."""

    def __init__(self, spec: RealArmSpec, bus: MotorBus, *, mjcf: str = "", ik_iterations: int = 3,
                 home_joint_step: float = 0.05, home_tolerance: float = 0.03) -> None:
        check_calibration(spec, bus.calibration)
        if not (math.isfinite(home_joint_step) and home_joint_step > 0):
            raise ValueError(f"home_joint_step must be > 0 rad, got {home_joint_step!r}")
        if not (math.isfinite(home_tolerance) and home_tolerance > 0):
            raise ValueError(f"home_tolerance must be > 0 rad, got {home_tolerance!r}")
        self.spec = spec
        self.bus = bus
        self.limits = spec.limits
        self.home_joint_step = float(home_joint_step)
        self.home_tolerance = float(home_tolerance)
        self.ik = spec.kinematics(mjcf, iterations=ik_iterations)
        self.home = np.array(list(spec.home_qpos) + [spec.gripper_open])
        self.home_ee, self.nominal_rotation = self.ik.forward(np.asarray(spec.home_qpos))
        if not self.limits.contains(self.home_ee, margin=1e-6):
            raise ValueError(f"arm {spec.name}: the home pose's end effector {self.home_ee.round(3).tolist()} is "
                             "outside the bounds box")
        self._n = len(spec.arm_joints)
        self.homed = False
        self.target: EndEffectorTarget | None = None
        self.goal: np.ndarray | None = None
        """Joint goals last sent (rad, bus order); None before the first write."""
        self.last: ArmReading | None = None

    # ------------------------------------------------------------------ read
    def read(self, deadline_s: float | None = None) -> ArmReading:
        """One read; a motor whose status flags a hardware error (overload, overheating, input
        voltage: the servo's own protection) raises ``MotorBusError`` naming it: the arm stops."""
        state = self.bus.read_state(deadline_s)
        state.raise_on_hardware_error()
        q = state.position
        if np.all(np.isfinite(q[:self._n])):
            position, rotation = self.ik.forward(q[:self._n])
            quaternion = matrix_to_quat(rotation)
        else:  # a motor never read: no pose to report
            position, quaternion = np.full(3, np.nan), np.full(4, np.nan)
        opening = float(np.clip(self.spec.gripper_opening(q[-1]), 0.0, 1.0)) if math.isfinite(q[-1]) else float("nan")
        self.last = ArmReading(state.names, q, state.velocity, state.effort, state.effort_unit, position,
                               quaternion, opening, state.stale, state.failed_ids, dict(state.reasons),
                               state.error_ids)
        return self.last

    def _measured(self) -> ArmReading:
        if self.last is None:
            raise MotorBusError("no reading yet: read() before commanding the arm")
        return self.last

    # --------------------------------------------------------------- command
    def hold_here(self) -> None:
        """Make the measured positions the goals (before torque on: the arm does not jump)."""
        reading = self._measured()
        if not np.all(np.isfinite(reading.position)):
            raise MotorBusError(f"cannot hold: motors {list(reading.failed_ids)} were never read")
        self.goal = reading.position.copy()
        self.bus.write_goals(self.goal)

    def step(self, deltas, gripper) -> bool:
        """Execute one end-effector command; returns True if it was malformed (then: hold)."""
        action, rejected = sanitize_action(deltas)
        grip, grip_rejected = sanitize_gripper(gripper)
        if rejected or grip_rejected or not self.homed:
            return rejected or grip_rejected
        reading = self._measured()
        q_previous = self.goal[:self._n]
        self.target = step_target(self.target, action, self.limits, reading.ee_position)
        rotation = target_rotation(self.nominal_rotation, self.target.rpy)
        q = self.ik.solve(q_previous, self.target.position, rotation)
        q, _ = limit_joint_step(self.ik, q_previous, q, self.limits)
        goal = self.goal.copy()
        goal[:self._n] = q
        if grip == GRIPPER_CLOSE:
            goal[-1] = self.spec.gripper_closed
        elif grip == GRIPPER_OPEN:
            goal[-1] = self.spec.gripper_open
        self.goal = goal
        self.bus.write_goals(goal)
        return False

    def home_step(self) -> bool:
        """One tick of homing; True once every joint is within ``home_tolerance`` of home."""
        reading = self._measured()
        start = self.goal if self.goal is not None else reading.position
        error = self.home - start
        self.goal = start + np.clip(error, -self.home_joint_step, self.home_joint_step)
        self.bus.write_goals(self.goal)
        arrived = bool(np.all(np.abs(self.home - reading.position) <= self.home_tolerance))
        if arrived:
            self.homed = True
            self.target = EndEffectorTarget(self.home_ee.copy(), np.zeros(3))
        return arrived

    # ------------------------------------------------------------------ stop
    def safe_stop(self, mode: str = "torque_off") -> list[str]:
        """Torque off (or hold) on every motor, then close the port; returns what failed."""
        problems = []
        if self.bus.connected:
            if mode == "hold" and self.last is not None and np.all(np.isfinite(self.last.position)):
                try:
                    self.bus.write_goals(self.last.position)
                except (MotorBusError, OSError, ValueError) as exc:
                    problems.append(f"hold: {exc}")
            else:
                try:
                    self.bus.set_torque(False, tries=TORQUE_TRIES)
                except (MotorBusError, OSError) as exc:
                    problems.append(str(exc))
        try:
            self.bus.close()
        except OSError as exc:
            problems.append(f"closing {self.bus.port_name}: {exc}")
        return problems
