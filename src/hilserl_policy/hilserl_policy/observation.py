"""State-vector layouts: named robot/task quantities -> the policy's state vector. No ROS here.

What the policy observes is part of the algorithm (see docs/observations.md for
the learning curves that chose the default). A layout is a pure function of
plain numpy inputs, so the in-process env, the ROS actor node (JointState,
end-effector pose, cube pose from ``hilserl/task_state``) and demo recording
all build the same vector:

- ``"relative"`` (default, 10-D): gripper opening, end-effector xyz, cube xyz,
  ``relative_scale * (cube - end effector)``. The offset that decides a grasp
  is centimetres; scaled by 10 it is of the order of the other entries.
- ``"raw"`` (7 + 7 + 1 + 3 + 3 = 21-D on the Panda): joint positions, joint
  velocities, gripper opening, end-effector xyz, cube xyz.
- ``"raw+relative"`` (24-D): ``"raw"`` followed by the scaled offset.
- ``"proprio"`` (4-D): gripper opening and end-effector xyz only, no cube: the
  robot's own state beside camera images, which are then the only way to see
  the cube (what a real robot without object tracking has).

Option ``dynamics=True`` (any layout) appends the joints' motion and load, as
the HIL-SERL authors recommend for contact-rich tasks: the velocity of every
joint of ``joint_states`` the layout does not already hold (all arm joints and
the gripper; the ``"raw"`` layouts hold the arm's, so only the gripper's), then
the effort of every joint, arm joints and gripper. Efforts are what the motors
report: in the MuJoCo bridge the force of each joint's actuator (N m, the
Panda's tendon-driven fingers in the tendon's units); on the real arm the
driver's ``JointState.effort`` (amperes for XL330 servos, normalised load in
[-1, 1] for STS3215/XL430). The same policy input thus exists in sim and on the
real arm; the numbers differ in scale, which ``bounds(effort_limit=...)`` fixes
per robot.

Units: metres (base frame), radians, rad/s; gripper opening 0 = closed, 1 = open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

LAYOUT_NAMES = ("relative", "raw", "raw+relative", "proprio")
DEFAULT_LAYOUT = "relative"
DEFAULT_RELATIVE_SCALE = 10.0
_XYZ = ("x", "y", "z")


def _vector(name: str, value, size: int | None) -> np.ndarray:
    """``value`` as a finite float64 vector of ``size`` entries, or a ValueError naming it."""
    if value is None:
        raise ValueError(f"{name} is required by this layout")
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if size is not None and array.shape[0] != size:
        raise ValueError(f"{name} must have {size} entries, got {array.shape[0]}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {array.tolist()}")
    return array


@dataclasses.dataclass(frozen=True)
class ObservationLayout:
    """One named layout of the state vector for an arm with ``num_joints`` arm joints.

    ``dim`` and ``names`` (one per element) say what the vector holds;
    ``build`` makes it from plain arrays; ``bounds`` gives fixed per-element
    ranges for ``ObservationSpec.state_normalization = "bounds"``.
    """

    name: str = DEFAULT_LAYOUT
    num_joints: int = 7  # arm joints (gripper excluded); used by the "raw" and dynamics parts only
    relative_scale: float = DEFAULT_RELATIVE_SCALE  # multiplier of (cube - end effector)
    dynamics: bool = False  # append joint velocities and efforts (arm joints and gripper), last

    def __post_init__(self) -> None:
        if self.name not in LAYOUT_NAMES:
            raise ValueError(f"ObservationLayout.name: must be one of {LAYOUT_NAMES}, got {self.name!r}")
        if isinstance(self.num_joints, bool) or not isinstance(self.num_joints, int) or self.num_joints < 1:
            raise ValueError(f"ObservationLayout.num_joints: must be an int >= 1, got {self.num_joints!r}")
        if not (np.isfinite(self.relative_scale) and self.relative_scale > 0):
            raise ValueError(f"ObservationLayout.relative_scale: must be > 0, got {self.relative_scale!r}")
        if not isinstance(self.dynamics, (bool, np.bool_)):
            raise ValueError(f"ObservationLayout.dynamics: must be a bool, got {self.dynamics!r}")

    @property
    def uses_joints(self) -> bool:
        return self.name in ("raw", "raw+relative")

    @property
    def uses_relative(self) -> bool:
        return self.name in ("relative", "raw+relative")

    @property
    def uses_cube(self) -> bool:
        return self.name != "proprio"

    @property
    def names(self) -> tuple[str, ...]:
        """Per-element names, e.g. ``("gripper", "ee_x", ..., "rel_z")``."""
        out: list[str] = []
        if self.uses_joints:
            out += [f"joint{i}_pos" for i in range(self.num_joints)]
            out += [f"joint{i}_vel" for i in range(self.num_joints)]
        out.append("gripper")
        out += [f"ee_{a}" for a in _XYZ]
        if self.uses_cube:
            out += [f"cube_{a}" for a in _XYZ]
        if self.uses_relative:
            out += [f"rel_{a}" for a in _XYZ]
        if self.dynamics:
            joints = [f"joint{i}" for i in range(self.num_joints)]
            if not self.uses_joints:  # the "raw" layouts already hold the arm's velocities
                out += [f"{j}_vel" for j in joints]
            out.append("gripper_vel")
            out += [f"{j}_effort" for j in joints] + ["gripper_effort"]
        return tuple(out)

    @property
    def dim(self) -> int:
        return len(self.names)

    def _joints(self, label: str, value, count: int) -> np.ndarray:
        """The first ``count`` entries of a joint array, or a ValueError naming it."""
        array = _vector(label, value, None)
        if array.shape[0] < count:
            raise ValueError(f"{label} must have at least {count} entries, got {array.shape[0]}")
        return array[:count]

    def build(self, *, gripper_opening: float, ee_position: Sequence[float],
              cube_position: Sequence[float] | None = None, joint_positions: Sequence[float] | None = None,
              joint_velocities: Sequence[float] | None = None,
              joint_efforts: Sequence[float] | None = None) -> np.ndarray:
        """The float32 state vector (``dim``,) in the order of ``names``.

        Joint arrays are in ``joint_states`` order: the ``num_joints`` arm
        joints, then the gripper joint. They may be longer (the first
        ``num_joints`` entries are used, or ``num_joints + 1`` with ``dynamics``,
        whose velocities and efforts include the gripper's). They are ignored
        by ``"relative"`` and ``"proprio"`` without ``dynamics``;
        ``cube_position`` is ignored by ``"proprio"``.
        """
        ee = _vector("ee_position", ee_position, 3)
        cube = _vector("cube_position", cube_position, 3) if self.uses_cube else None
        gripper = _vector("gripper_opening", gripper_opening, 1)
        parts = []
        if self.uses_joints:
            parts.append(self._joints("joint_positions", joint_positions, self.num_joints))
            parts.append(self._joints("joint_velocities", joint_velocities, self.num_joints))
        parts += [gripper, ee] + ([cube] if self.uses_cube else [])
        if self.uses_relative:
            parts.append(self.relative_scale * (cube - ee))
        if self.dynamics:
            velocities = self._joints("joint_velocities", joint_velocities, self.num_joints + 1)
            parts.append(velocities[self.num_joints:] if self.uses_joints else velocities)
            parts.append(self._joints("joint_efforts", joint_efforts, self.num_joints + 1))
        return np.concatenate(parts).astype(np.float32)

    def bounds(self, position_low: Sequence[float], position_high: Sequence[float],
               joint_low: Sequence[float] | None = None, joint_high: Sequence[float] | None = None,
               joint_velocity_limit: float = 2.0, effort_limit: float | Sequence[float] | None = None,
               ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Fixed (low, high) per element from the workspace box (and joint ranges).

        ``position_low/high``: the end-effector bounds box (also bounds the cube
        while held; a cube pushed outside it is merely outside [-1, 1]).
        ``joint_velocity_limit`` (rad/s) bounds every joint velocity.
        ``effort_limit`` (required by ``dynamics``): one number for every joint or
        one per joint of ``joint_states`` (arm joints, then the gripper), in the
        units of ``JointState.effort``: the actuators' force range in sim (N m),
        the servo's current (A) or normalised load (1.0) on the real arm.
        """
        if not (np.isfinite(joint_velocity_limit) and joint_velocity_limit > 0):
            raise ValueError(f"joint_velocity_limit must be > 0, got {joint_velocity_limit!r}")
        low3 = _vector("position_low", position_low, 3)
        high3 = _vector("position_high", position_high, 3)
        low: list[float] = []
        high: list[float] = []
        if self.uses_joints:
            if joint_low is None or joint_high is None:
                raise ValueError("joint_low and joint_high are required by this layout's bounds")
            low += list(_vector("joint_low", joint_low, None)[:self.num_joints])
            high += list(_vector("joint_high", joint_high, None)[:self.num_joints])
            low += [-joint_velocity_limit] * self.num_joints
            high += [joint_velocity_limit] * self.num_joints
        low.append(0.0)
        high.append(1.0)
        cube_low = low3.copy()
        cube_low[2] = 0.0  # the cube rests on the table (z = 0 in the base frame)
        low += list(low3) + (list(cube_low) if self.uses_cube else [])
        high += list(high3) + (list(high3) if self.uses_cube else [])
        if self.uses_relative:
            span = self.relative_scale * (high3 - cube_low)
            low += list(-span)
            high += list(span)
        if self.dynamics:
            velocities = 1 if self.uses_joints else self.num_joints + 1
            low += [-joint_velocity_limit] * velocities
            high += [joint_velocity_limit] * velocities
            efforts = self._effort_limits(effort_limit)
            low += list(-efforts)
            high += list(efforts)
        if len(low) != self.dim:
            raise ValueError(f"joint_low/joint_high must have at least {self.num_joints} entries")
        return tuple(float(v) for v in low), tuple(float(v) for v in high)


    def _effort_limits(self, effort_limit) -> np.ndarray:
        """``effort_limit`` as one positive limit per joint (arm joints, then the gripper)."""
        if effort_limit is None:
            raise ValueError("effort_limit is required by the bounds of a layout with dynamics")
        count = self.num_joints + 1
        limits = _vector("effort_limit", effort_limit, None)
        if limits.shape[0] == 1:
            limits = np.repeat(limits, count)
        if limits.shape[0] != count:
            raise ValueError(f"effort_limit must be one number or {count} (arm joints, then the "
                             f"gripper), got {limits.shape[0]}")
        if np.any(limits <= 0):
            raise ValueError(f"effort_limit must be > 0, got {limits.tolist()}")
        return limits


def build_state(layout: str | ObservationLayout, **quantities) -> np.ndarray:
    """Shorthand: ``ObservationLayout(layout).build(**quantities)`` for a layout name."""
    if isinstance(layout, str):
        layout = ObservationLayout(layout)
    return layout.build(**quantities)


@dataclasses.dataclass(frozen=True)
class GripperCalibration:
    """Which joint of ``joint_states`` is the gripper and its positions when closed and open."""

    joint: str = "right_driver_joint"
    closed_position: float = 0.8
    open_position: float = 0.0

    def __post_init__(self) -> None:
        if self.closed_position == self.open_position:
            raise ValueError("GripperCalibration: closed_position and open_position must differ")

    def opening(self, joint_names: Sequence[str], joint_positions: Sequence[float]) -> float:
        """Gripper opening in [0, 1] (0 closed) from a joint-state message's names and positions."""
        names = list(joint_names)
        if self.joint not in names:
            raise ValueError(f"joint_states has no gripper joint {self.joint!r} (has {names})")
        q = joint_positions[names.index(self.joint)]
        return float(np.clip((q - self.closed_position) / (self.open_position - self.closed_position), 0.0, 1.0))


def state_from_messages(layout: ObservationLayout, gripper: GripperCalibration, joints, ee_pose,
                        task_state=None) -> np.ndarray:
    """The layout's state vector from one frame's messages: ``sensor_msgs/JointState``,
    ``PoseStamped`` of the end effector and of the task object (duck-typed: rclpy messages and
    rosbags' deserialised ones both work). What the actor acts on and what demo bags become.

    ``joint_states`` holds the arm joints first; with ``layout.dynamics`` the gripper's
    velocity and effort are taken at the gripper joint's name, and a message without
    velocities or efforts for every joint is a ValueError naming the field."""
    ee = ee_pose.pose.position
    cube = None
    if layout.uses_cube:
        if task_state is None:
            raise ValueError(f"layout {layout.name!r} needs the task state (hilserl/task_state), and there is none")
        task = task_state.pose.position
        cube = [task.x, task.y, task.z]
    velocities, efforts = joints.velocity, None
    if layout.dynamics:
        names = list(joints.name)
        if gripper.joint not in names:
            raise ValueError(f"joint_states has no gripper joint {gripper.joint!r} (has {names})")
        if names.index(gripper.joint) < layout.num_joints:
            raise ValueError(f"joint_states has the gripper joint {gripper.joint!r} among the first "
                             f"{layout.num_joints} (the arm joints): {names}")
        picked = [*range(layout.num_joints), names.index(gripper.joint)]
        fields = {}
        for field in ("velocity", "effort"):
            values = np.asarray(getattr(joints, field), dtype=np.float64).reshape(-1)
            if values.shape[0] != len(names):
                raise ValueError(f"joint_states {field} has {values.shape[0]} entries for {len(names)} "
                                 f"joints; observation dynamics needs the {field} of every joint")
            fields[field] = values[picked]
        velocities, efforts = fields["velocity"], fields["effort"]
    return layout.build(gripper_opening=gripper.opening(joints.name, joints.position),
                        ee_position=[ee.x, ee.y, ee.z], cube_position=cube,
                        joint_positions=joints.position, joint_velocities=velocities,
                        joint_efforts=efforts)

