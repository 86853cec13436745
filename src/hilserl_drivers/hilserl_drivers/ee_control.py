"""End-effector control: normalised Action deltas -> safe end-effector target -> joint targets.

ROS-free and shared by the MuJoCo bridge and the real low-cost arm drivers.

The chain, one call per control step:

1. ``sanitize_action``: a command that is not a finite vector of the right length is
   rejected and replaced by "hold" (zero deltas, gripper stays); finite values are
   clipped to [-1, 1]. NaN passes ``np.clip``, so the check comes first.
2. ``step_target``: the normalised deltas are scaled by the per-step limits
   (metres, radians), added to the previous target, clamped to the bounds box and
   kept within ``max_tracking_error`` of the measured end effector (anti wind-up:
   a blocked arm never accumulates a far-away target that it would jump to).
3. ``ArmIK.solve``: differential IK with ``mink`` on the arm's own MJCF (position +
   orientation task, posture regularisation, joint limits) -> joint position targets.
4. ``limit_joint_step``: forward kinematics of the IK answer is checked against the box
   and the step limit; an offending joint step is shortened (or the arm holds), so both
   hold exactly for the commanded pose whatever the IK does.

Positions are in the robot base frame. Orientation targets are roll/pitch/yaw offsets
applied to a nominal end-effector orientation (the orientation at the arm's home pose),
and the offsets are bounded by their own box.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import mujoco
import numpy as np

ACTION_DIM = 6
"""Continuous part of a command: linear x, y, z and angular x, y, z, normalised to [-1, 1]."""

GRIPPER_CLOSE = -1
GRIPPER_STAY = 0
GRIPPER_OPEN = 1


@dataclasses.dataclass(frozen=True)
class EndEffectorLimits:
    """Bounds box and per-step limits applied to every command, whoever sent it."""

    position_low: tuple[float, float, float]
    """Lower corner of the end-effector bounds box in the base frame (m)."""
    position_high: tuple[float, float, float]
    """Upper corner of the end-effector bounds box in the base frame (m)."""
    max_step_translation: float = 0.02
    """Translation per control step for a normalised delta of 1 (m); also the largest step."""
    rpy_low: tuple[float, float, float] = (0.0, 0.0, -0.5)
    """Lower bound of the roll/pitch/yaw offset from the nominal orientation (rad)."""
    rpy_high: tuple[float, float, float] = (0.0, 0.0, 0.5)
    """Upper bound of the roll/pitch/yaw offset from the nominal orientation (rad)."""
    max_step_rotation: float = 0.1
    """Rotation per control step for a normalised delta of 1 (rad); also the largest step."""
    max_tracking_error: float = 0.04
    """Largest distance kept between the target and the measured end effector (m)."""

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not a usable limit."""
        for name in ("position_low", "position_high", "rpy_low", "rpy_high"):
            value = np.asarray(getattr(self, name), dtype=float)
            if value.shape != (3,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be 3 finite numbers, got {getattr(self, name)!r}")
        if np.any(np.asarray(self.position_low) > np.asarray(self.position_high)):
            raise ValueError(
                f"position_low {self.position_low} must not exceed position_high {self.position_high}"
            )
        if np.any(np.asarray(self.rpy_low) > np.asarray(self.rpy_high)):
            raise ValueError(f"rpy_low {self.rpy_low} must not exceed rpy_high {self.rpy_high}")
        for name in ("max_step_translation", "max_step_rotation", "max_tracking_error"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.max_tracking_error < self.max_step_translation:
            raise ValueError(
                f"max_tracking_error ({self.max_tracking_error}) must be at least "
                f"max_step_translation ({self.max_step_translation})"
            )

    def contains(self, position: np.ndarray, margin: float = 0.0) -> bool:
        """Whether a position lies in the bounds box grown by ``margin`` (m)."""
        p = np.asarray(position, dtype=float)
        return bool(
            np.all(p >= np.asarray(self.position_low) - margin)
            and np.all(p <= np.asarray(self.position_high) + margin)
        )


class EndEffectorTarget(NamedTuple):
    """Where the end effector is told to be: base-frame position and rpy offset."""

    position: np.ndarray
    rpy: np.ndarray


def sanitize_action(action: Sequence[float] | np.ndarray) -> tuple[np.ndarray, bool]:
    """Return (deltas clipped to [-1, 1], rejected).

    Anything but ``ACTION_DIM`` finite numbers is rejected: the result is all zeros
    ("hold") and ``rejected`` is True, so the caller can count and log it.
    """
    try:
        vec = np.asarray(action, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return np.zeros(ACTION_DIM), True
    if vec.shape != (ACTION_DIM,) or not np.all(np.isfinite(vec)):
        return np.zeros(ACTION_DIM), True
    return np.clip(vec, -1.0, 1.0), False


def sanitize_gripper(command: object) -> tuple[int, bool]:
    """Return (gripper command in {-1, 0, 1}, rejected). Unknown values mean "stay"."""
    if isinstance(command, (bool, np.bool_)):
        return GRIPPER_STAY, True
    try:
        value = int(command)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return GRIPPER_STAY, True
    if value != command or value not in (GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN):
        return GRIPPER_STAY, True
    return value, False


def clamp_target(target: EndEffectorTarget, limits: EndEffectorLimits) -> EndEffectorTarget:
    """Clamp a target into the bounds box and the rpy box."""
    return EndEffectorTarget(
        np.clip(target.position, limits.position_low, limits.position_high),
        np.clip(target.rpy, limits.rpy_low, limits.rpy_high),
    )


def step_target(
    target: EndEffectorTarget,
    deltas: np.ndarray,
    limits: EndEffectorLimits,
    measured_position: np.ndarray | None = None,
) -> EndEffectorTarget:
    """Apply one step of sanitised normalised deltas to ``target``.

    The translation moves at most ``max_step_translation`` per axis and the result is
    clamped to the box; with ``measured_position`` the target is also pulled to within
    ``max_tracking_error`` of the measured end effector (then clamped again).
    The returned target is always inside the bounds box.
    """
    deltas = np.asarray(deltas, dtype=float)
    position = np.asarray(target.position, dtype=float) + deltas[:3] * limits.max_step_translation
    rpy = np.asarray(target.rpy, dtype=float) + deltas[3:6] * limits.max_step_rotation
    if measured_position is not None:
        measured = np.asarray(measured_position, dtype=float)
        if np.all(np.isfinite(measured)):
            offset = position - measured
            distance = float(np.linalg.norm(offset))
            if distance > limits.max_tracking_error:
                position = measured + offset * (limits.max_tracking_error / distance)
    return clamp_target(EndEffectorTarget(position, rpy), limits)


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """Rotation matrix of extrinsic x-y-z (roll, pitch, yaw) angles."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def target_rotation(nominal: np.ndarray, rpy: np.ndarray) -> np.ndarray:
    """World rotation of a target: the rpy offset (base-frame axes) applied to the nominal."""
    return rpy_to_matrix(rpy) @ np.asarray(nominal, dtype=float).reshape(3, 3)


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """(w, x, y, z) quaternion of a rotation matrix."""
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(matrix, dtype=float).reshape(9))
    return quat


def add_tcp_site(spec: mujoco.MjSpec, name: str, body: str, pos: Sequence[float]) -> None:
    """Add a tool-centre-point site to ``body`` of an arm spec (e.g. between the jaws)."""
    parent = spec.body(body)
    if parent is None:
        raise ValueError(f"body {body!r} for the tool centre point {name!r} not found")
    parent.add_site(name=name, pos=np.asarray(pos, dtype=float), size=[0.005, 0.005, 0.005], group=4)


def arm_kinematics_model(
    mjcf_path: str,
    arm_joints: Sequence[str],
    ee_site: str,
    tcp: tuple[str, Sequence[float]] | None = None,
) -> mujoco.MjModel:
    """Compile the arm's own MJCF with every joint but ``arm_joints`` welded.

    Gripper joints, tendons, equality constraints and actuators do not move the
    end-effector site, so removing them keeps the IK problem to the arm's DoFs.
    ``tcp`` = (body, pos) first adds the site ``ee_site`` there (see ``add_tcp_site``).
    """
    spec = mujoco.MjSpec.from_file(str(mjcf_path))
    if tcp is not None:
        add_tcp_site(spec, ee_site, tcp[0], tcp[1])
    keep = set(arm_joints)
    names = {j.name for j in spec.joints}
    missing = keep - names
    if missing:
        raise ValueError(f"{mjcf_path}: arm joints {sorted(missing)} not found")
    if ee_site not in {s.name for s in spec.sites}:
        raise ValueError(f"{mjcf_path}: end-effector site {ee_site!r} not found")
    for element in list(spec.actuators) + list(spec.sensors) + list(spec.equalities):
        spec.delete(element)
    for tendon in list(spec.tendons):
        spec.delete(tendon)
    # Geometry does not move the site; dropping it skips mesh loading (about 1 s).
    for element in list(spec.geoms) + list(spec.meshes):
        spec.delete(element)
    for joint in list(spec.joints):
        if joint.name not in keep:
            spec.delete(joint)
    model = spec.compile()
    if np.any(model.jnt_type < int(mujoco.mjtJoint.mjJNT_SLIDE)) or model.njnt != len(keep):
        raise ValueError(f"{mjcf_path}: arm joints must be {len(keep)} hinge or slide joints")
    return model


def limit_joint_step(
    ik: "ArmIK", q_previous: np.ndarray, q_new: np.ndarray, limits: EndEffectorLimits, iterations: int = 8
) -> tuple[np.ndarray, bool]:
    """Return (joint target, limited): the IK result checked by forward kinematics.

    IK is a compromise (posture, joint limits, unreachable poses), so its answer can
    put the end effector outside the bounds box or move it farther than the step
    limit. Then the largest fraction of the joint step that satisfies both is kept
    (bisection); if none does, the previous target is held. The box and the step are
    therefore guaranteed on the commanded pose, whatever the IK does.
    """
    q_previous = np.asarray(q_previous, dtype=float)
    q_new = np.asarray(q_new, dtype=float)
    p_previous, _ = ik.forward(q_previous)
    step = limits.max_step_translation + 1e-9

    def acceptable(q: np.ndarray) -> bool:
        p, _ = ik.forward(q)
        return limits.contains(p) and float(np.max(np.abs(p - p_previous))) <= step

    if acceptable(q_new):
        return q_new, False
    low, high = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if acceptable(q_previous + mid * (q_new - q_previous)):
            low = mid
        else:
            high = mid
    return q_previous + low * (q_new - q_previous), True


class ArmIK:
    """Differential IK with mink on an arm-only model; one ``solve`` per control step."""

    def __init__(
        self,
        model: mujoco.MjModel,
        ee_site: str,
        home_qpos: Sequence[float],
        *,
        position_cost: float = 1.0,
        orientation_cost: float = 0.5,
        posture_cost: float = 1e-3,
        iterations: int = 3,
        damping: float = 1e-4,
        solver: str = "daqp",
    ) -> None:
        import mink  # imported here so the pure functions above need no mink

        self._mink = mink
        self.model = model
        self.ee_site = ee_site
        if len(home_qpos) != model.nq:
            raise ValueError(f"home_qpos has {len(home_qpos)} values, the arm model has nq={model.nq}")
        self.home_qpos = np.asarray(home_qpos, dtype=float)
        self.iterations = int(iterations)
        self.damping = float(damping)
        self.solver = solver
        self.configuration = mink.Configuration(model, q=self.home_qpos.copy())
        self.frame_task = mink.FrameTask(
            frame_name=ee_site,
            frame_type="site",
            position_cost=position_cost,
            orientation_cost=orientation_cost,
            lm_damping=1e-3,
        )
        self.posture_task = mink.PostureTask(model, cost=posture_cost)
        self.posture_task.set_target(self.home_qpos)
        self.limits = [mink.ConfigurationLimit(model)]
        self._site_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, ee_site)

    def forward(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """End-effector (position, rotation matrix) of an arm configuration."""
        self.configuration.update(np.asarray(qpos, dtype=float))
        data = self.configuration.data
        return data.site_xpos[self._site_id].copy(), data.site_xmat[self._site_id].reshape(3, 3).copy()

    def solve(
        self, qpos: np.ndarray, position: np.ndarray, rotation: np.ndarray, dt: float = 1.0
    ) -> np.ndarray:
        """Joint targets that bring the site toward (position, rotation), starting from qpos."""
        mink = self._mink
        self.configuration.update(np.asarray(qpos, dtype=float))
        target = mink.SE3.from_rotation_and_translation(
            mink.SO3.from_matrix(np.asarray(rotation, dtype=float)), np.asarray(position, dtype=float)
        )
        self.frame_task.set_target(target)
        tasks = [self.frame_task, self.posture_task]
        for _ in range(self.iterations):
            velocity = mink.solve_ik(
                self.configuration, tasks, dt, self.solver, damping=self.damping, limits=self.limits
            )
            self.configuration.integrate_inplace(velocity, dt)
        q = self.configuration.q.copy()
        low, high = self.model.jnt_range[:, 0], self.model.jnt_range[:, 1]
        limited = self.model.jnt_limited.astype(bool)
        q[limited] = np.clip(q[limited], low[limited], high[limited])
        return q
