"""Safety limiter core: one executed action in, one command that is safe to send out. No ROS.

Every command the robot receives passes here, whoever produced it (policy, person,
scripted expert). Given the latest measured end-effector position, ``SafetyLimiter.limit``
returns either the command with its deltas clamped, or "hold" (zero deltas, gripper
stays) together with the reason it was rejected. It never raises on a bad command and
counts every rejection by reason.

Rejected (-> hold):
- ``malformed``: not 3 or 6 finite numbers (NaN, +-inf, wrong length, not numbers);
- ``out_of_range``: a finite delta beyond [-1, 1] (normalised deltas are promised by
  every producer; 1e6 is a bug upstream, not a wish to move fast);
- ``bad_gripper``: a gripper command other than CLOSE, STAY, OPEN;
- ``stale``: stamp older than ``max_command_age`` (a command that waited in a queue);
- ``future``: stamp ahead of the clock by more than ``max_command_age``;
- ``out_of_order``: stamp not newer than the last accepted command's;
- ``no_pose``: no measured end-effector position yet, or older than ``pose_timeout``.

Clamped (not a rejection): deltas are clipped to ``max_delta`` (the per-step clamp, a
fraction of the driver's per-step limit), then the translation is shortened so that the
measured position plus the step stays inside the bounds box (``ee_control.clamp_target``),
and rotation about an axis whose rpy range is empty is removed. The output deltas are
normalised again, so the driver that scales them by the same ``max_step_translation``
moves by the clamped amount.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from hilserl_drivers.ee_control import (
    ACTION_DIM,
    GRIPPER_STAY,
    EndEffectorLimits,
    EndEffectorTarget,
    clamp_target,
    sanitize_action,
    sanitize_gripper,
)

REJECTION_REASONS = ("malformed", "out_of_range", "bad_gripper", "stale", "future", "out_of_order", "no_pose")
"""Every reason ``SafetyLimiter.limit`` can give, in the order they are checked."""

RANGE_TOLERANCE = 1e-6
"""Deltas within this of [-1, 1] count as in range (float rounding upstream)."""


@dataclasses.dataclass(frozen=True)
class LimiterConfig:
    """What the limiter enforces. Stamps and ages are in seconds of the caller's clock."""

    limits: EndEffectorLimits
    """Bounds box, rpy box and the per-step scale: a normalised delta of 1 moves the driver by
    ``max_step_translation`` (m) / ``max_step_rotation`` (rad). Must match the driver's."""
    max_delta: float = 1.0
    """Per-step clamp on every normalised delta, as a fraction (0, 1] of the driver's per-step limit."""
    max_command_age: float = 0.5
    """A command whose stamp is older than this (s) is stale; 0 disables the age check."""
    pose_timeout: float = 0.5
    """A measured pose older than this (s) is not trusted: hold; 0 trusts the latest pose at any age."""
    workspace: bool = True
    """False: the driven system has no end effector (a hosted gymnasium task): no pose is needed
    and only the per-step clamp applies (plus every rejection)."""

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not usable."""
        self.limits.validate()
        if not (np.isfinite(self.max_delta) and 0.0 < self.max_delta <= 1.0):
            raise ValueError(f"max_delta must be in (0, 1], got {self.max_delta!r}")
        for name in ("max_command_age", "pose_timeout"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0 (0 disables), got {value!r}")


class LimitedCommand(NamedTuple):
    """The command to send: always ``ACTION_DIM`` finite deltas in [-max_delta, max_delta]."""

    deltas: np.ndarray
    gripper: int
    rejected: str | None
    """None when accepted, else one of ``REJECTION_REASONS`` (and the command is hold)."""
    clamped: bool
    """Accepted, but the box or the per-step clamp changed the deltas."""

    @property
    def is_hold(self) -> bool:
        return self.rejected is not None


def hold() -> tuple[np.ndarray, int]:
    """Zero deltas, gripper stays."""
    return np.zeros(ACTION_DIM), GRIPPER_STAY


class SafetyLimiter:
    """Stateful limiter: remembers the latest pose, the last accepted stamp and the counters."""

    def __init__(self, config: LimiterConfig) -> None:
        config.validate()
        self.config = config
        self.rejections: collections.Counter[str] = collections.Counter({r: 0 for r in REJECTION_REASONS})
        self.accepted = 0
        self.clamped = 0
        self._pose: np.ndarray | None = None
        self._pose_time: float | None = None
        self._last_stamp: float | None = None

    # ------------------------------------------------------------------ inputs
    def reconfigure(self, config: LimiterConfig) -> None:
        """Switch to a new (validated) configuration; counters and state are kept."""
        config.validate()
        self.config = config

    def update_pose(self, position: Sequence[float] | np.ndarray, now: float) -> bool:
        """Record the measured end-effector position (base frame, m); False if it is not 3 finite numbers."""
        p = np.asarray(position, dtype=float).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            return False
        self._pose, self._pose_time = p, float(now)
        return True

    @property
    def pose(self) -> np.ndarray | None:
        return None if self._pose is None else self._pose.copy()

    @property
    def total_rejected(self) -> int:
        return sum(self.rejections.values())

    # ------------------------------------------------------------------ the check
    def limit(self, deltas: Sequence[float] | np.ndarray, gripper: object, stamp: float, now: float) -> LimitedCommand:
        """Check and clamp one command stamped ``stamp`` arriving at ``now`` (same clock, s)."""
        reason = self._reject_reason(deltas, gripper, stamp, now)
        if reason is not None:
            self.rejections[reason] += 1
            zero, stay = hold()
            return LimitedCommand(zero, stay, reason, False)
        self._last_stamp = float(stamp)
        self.accepted += 1
        clean, _ = sanitize_action(self._as_six(deltas))
        out = self._clamp(clean)
        changed = bool(np.any(np.abs(out - clean) > 1e-12))
        self.clamped += changed
        grip, _ = sanitize_gripper(gripper)
        return LimitedCommand(out, grip, None, changed)

    def _reject_reason(self, deltas, gripper, stamp: float, now: float) -> str | None:
        cfg = self.config
        six = self._as_six(deltas)
        if six is None:
            return "malformed"
        _, malformed = sanitize_action(six)
        if malformed:
            return "malformed"
        if np.any(np.abs(six) > 1.0 + RANGE_TOLERANCE):
            return "out_of_range"
        if sanitize_gripper(gripper)[1]:
            return "bad_gripper"
        if not np.isfinite(stamp):
            return "malformed"
        if cfg.max_command_age > 0.0:
            if now - stamp > cfg.max_command_age:
                return "stale"
            if stamp - now > cfg.max_command_age:
                return "future"
        if self._last_stamp is not None and stamp <= self._last_stamp:
            return "out_of_order"
        if cfg.workspace and (self._pose is None or
                              (cfg.pose_timeout > 0.0 and now - self._pose_time > cfg.pose_timeout)):
            return "no_pose"
        return None

    @staticmethod
    def _as_six(deltas) -> np.ndarray | None:
        """3 linear deltas (angular zero) or 6; anything else is None."""
        try:
            vec = np.asarray(deltas, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            return None
        if vec.shape == (3,):
            return np.concatenate([vec, np.zeros(3)])
        if vec.shape == (ACTION_DIM,):
            return vec
        return None

    def _clamp(self, clean: np.ndarray) -> np.ndarray:
        """Per-step clamp, then keep measured position + step inside the box (rpy box likewise).

        Clamping only ever shortens a step: it never lengthens, reverses or creates one, so a
        measured pose slightly outside the box (servo overshoot) does not turn "hold" into a
        motion; a step further out is cut to zero, a step back in passes.
        """
        cfg, lim = self.config, self.config.limits
        stepped = np.clip(clean, -cfg.max_delta, cfg.max_delta)
        if not cfg.workspace:
            return stepped
        scale = np.array([lim.max_step_translation] * 3 + [lim.max_step_rotation] * 3)
        # The rotation offset is not measured here: start from the rpy box's point nearest 0,
        # so an axis with an empty range gets no rotation and the others keep their step.
        start = EndEffectorTarget(self._pose, np.clip(np.zeros(3), lim.rpy_low, lim.rpy_high))
        wanted = stepped * scale
        target = clamp_target(
            EndEffectorTarget(start.position + wanted[:3], start.rpy + wanted[3:]), lim)
        allowed = np.concatenate([target.position - start.position, target.rpy - start.rpy]) / scale
        return np.clip(allowed, np.minimum(stepped, 0.0), np.maximum(stepped, 0.0))
