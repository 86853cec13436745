"""Gymnasium ``Env`` over the pick-cube core (``PickCubeSim``). No ROS in here.

Action (``Dict``): ``"deltas"``, Box(-1, 1, (3,)) normalised end-effector xyz
deltas (the env pads them to the scene's six with zero rotation), and
``"gripper"``, Discrete(3), the grasp-critic index (0 close, 1 stay, 2 open)
that ``RLPDAgent.act`` returns; the env maps it to the scene's command. A
``(deltas, gripper)`` tuple is accepted too.

Observation (``Dict``): ``{"state": float32 vector}`` built by an
``ObservationLayout`` (default ``"relative"``), plus one uint8 RGB image
(``image_height`` x ``image_width`` x 3 of the ``PickCubeConfig``, square) per
name in ``cameras`` (e.g. ``("front", "wrist")`` with the ``"proprio"`` layout:
the cameras are then the only way to see the cube), the dict
``RLPDAgent.act`` and the replay buffers take as is. ``dynamics=True`` (or a
layout with ``dynamics``) appends the joints' velocities and actuator forces,
the vector the actor builds from the bridge's ``joint_states``.

Reward 1 on success (sparse). ``terminated`` on success, ``truncated`` at the
time limit (a time-out bootstraps). ``info``: ``success``, ``gripper_penalty``
(``RLPDConfig.gripper_penalty`` if the gripper command changed the gripper's
state, else 0: store it beside the reward, the grasp critic adds it),
``gripper_closed`` (commanded state after the step), ``rejected`` (malformed
command held), and the ``sim_state`` (a ``SimState``) for experts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gymnasium
import numpy as np
from gymnasium import spaces

from hilserl_drivers.ee_control import ACTION_DIM, GRIPPER_CLOSE
from hilserl_policy.config import ObservationSpec
from hilserl_policy.networks import (
    GRIPPER_STAY,
    NUM_GRIPPER_ACTIONS,
    gripper_change_penalty,
    gripper_index_to_command,
)
from hilserl_policy.observation import DEFAULT_LAYOUT, ObservationLayout
from hilserl_sim.pick_cube import PickCubeConfig, PickCubeSim, SimState
from hilserl_sim.scenes import ARM_PREFIX

ENV_ID = "HilserlPickCube-v0"
DEFAULT_GRIPPER_PENALTY = -0.02  # as RLPDConfig.gripper_penalty


def state_vector(layout: ObservationLayout, state: SimState) -> np.ndarray:
    """The layout's state vector from one ``SimState`` (what the bridge publishes)."""
    return layout.build(gripper_opening=state.gripper_opening, ee_position=state.ee_position,
                        cube_position=state.cube_position, joint_positions=state.joint_positions,
                        joint_velocities=state.joint_velocities, joint_efforts=state.joint_efforts)


class PickCubeEnv(gymnasium.Env):
    """Pick-cube as a gymnasium environment (see the module docstring for the spaces)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: PickCubeConfig | None = None,
                 layout: str | ObservationLayout = DEFAULT_LAYOUT,
                 gripper_penalty: float = DEFAULT_GRIPPER_PENALTY,
                 render_mode: str | None = None, render_camera: str | None = None,
                 cameras: Sequence[str] = (), dynamics: bool = False):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (np.isfinite(gripper_penalty) and gripper_penalty <= 0):
            raise ValueError(f"gripper_penalty must be a finite number <= 0, got {gripper_penalty!r}")
        config = config or PickCubeConfig()
        config.validate()
        n_joints = len(config.description.arm_joints)
        if isinstance(layout, str):
            layout = ObservationLayout(layout, num_joints=n_joints, dynamics=dynamics)
        elif dynamics and not layout.dynamics:
            raise ValueError("dynamics=True with a layout without dynamics: give one or the other")
        if layout.num_joints != n_joints:  # checked before the (slow) scene build
            raise ValueError(f"layout.num_joints is {layout.num_joints}, the {config.arm} "
                             f"arm has {n_joints}")
        cameras = tuple(cameras)
        if cameras and config.image_width != config.image_height:
            raise ValueError(f"camera observations are square: image_width {config.image_width} "
                             f"!= image_height {config.image_height}")
        self.sim = PickCubeSim(config)
        unknown = [c for c in cameras if c not in self.sim.camera_names]
        if unknown:
            self.sim.close()
            raise ValueError(f"cameras {unknown} not in this scene; it has {list(self.sim.camera_names)}")
        self.cameras = cameras
        self.image_size = config.image_width
        self.layout = layout
        self.gripper_penalty = float(gripper_penalty)
        self.render_mode = render_mode
        self.render_camera = render_camera or self.sim.camera_names[0]
        image = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        self.observation_space = spaces.Dict(
            {"state": spaces.Box(-np.inf, np.inf, (layout.dim,), np.float32),
             **{camera: image for camera in cameras}})
        self.action_space = spaces.Dict(
            {"deltas": spaces.Box(-1.0, 1.0, (3,), np.float32),
             "gripper": spaces.Discrete(NUM_GRIPPER_ACTIONS)})
        self.sim_state: SimState = self.sim.state()

    # ------------------------------------------------------------------ spaces
    def state_bounds(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Fixed per-element (low, high) of the state: workspace box, joint ranges and
        (with dynamics) the actuators' force ranges."""
        model = self.sim.model
        ranges = np.array([model.joint(ARM_PREFIX + name).range for name in self.sim.arm.arm_joints])
        limits = self.sim.limits
        return self.layout.bounds(limits.position_low, limits.position_high, ranges[:, 0], ranges[:, 1],
                                  effort_limit=self.sim.effort_limits())

    def observation_spec(self, state_normalization: str = "none") -> ObservationSpec:
        """The ``ObservationSpec`` of this env (3 deltas, a gripper, the layout's state, cameras)."""
        low, high = self.state_bounds() if state_normalization == "bounds" else ((), ())
        return ObservationSpec(state_dim=self.layout.dim, action_dim=3, has_gripper=True,
                               camera_names=self.cameras, image_size=self.image_size,
                               state_normalization=state_normalization, state_low=low,
                               state_high=high)

    def _observation(self) -> dict[str, np.ndarray]:
        return {"state": state_vector(self.layout, self.sim_state),
                **{camera: self.sim.render(camera) for camera in self.cameras}}

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """New episode. The cube and arm start are drawn from ``seed`` (or the env's
        generator); ``options={"initial_state": [...]}`` as ``PickCubeSim.reset`` takes."""
        super().reset(seed=seed)
        episode_seed = seed if seed is not None else int(self.np_random.integers(2 ** 31))
        initial = (options or {}).get("initial_state")
        self.sim_state = self.sim.reset(seed=episode_seed, initial_state=initial)
        return self._observation(), {"success": False, "sim_state": self.sim_state}

    @staticmethod
    def _split_action(action) -> tuple[np.ndarray, int]:
        if isinstance(action, Mapping):
            missing = {"deltas", "gripper"} - set(action)
            if missing:
                raise ValueError(f"action dict is missing {sorted(missing)}")
            deltas, gripper = action["deltas"], action["gripper"]
        elif isinstance(action, tuple) and len(action) == 2:
            deltas, gripper = action
        else:
            raise ValueError("action must be {'deltas': (3,), 'gripper': 0|1|2} or a "
                             f"(deltas, gripper) tuple, got {type(action).__name__}")
        deltas = np.asarray(deltas, dtype=np.float64).reshape(-1)
        if deltas.shape != (3,):
            raise ValueError(f"action 'deltas' must have 3 entries, got {deltas.shape[0]}")
        if gripper is None:
            gripper = GRIPPER_STAY
        if isinstance(gripper, (bool, np.bool_)) or int(gripper) != gripper or gripper not in (0, 1, 2):
            raise ValueError(f"action 'gripper' must be 0 (close), 1 (stay) or 2 (open), got {gripper!r}")
        return deltas, int(gripper)

    def step(self, action):
        deltas, gripper_index = self._split_action(action)
        was_closed = self.sim.gripper_command == GRIPPER_CLOSE
        penalty = gripper_change_penalty(gripper_index, was_closed, self.gripper_penalty)
        padded = np.zeros(ACTION_DIM)
        padded[:3] = deltas
        result = self.sim.step(padded, gripper_index_to_command(gripper_index))
        self.sim_state = self.sim.state()
        info = {"success": result.success, "gripper_penalty": penalty,
                "gripper_closed": self.sim.gripper_command == GRIPPER_CLOSE,
                "rejected": result.rejected, "sim_state": self.sim_state}
        return self._observation(), result.reward, result.terminated, result.truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.sim.render(self.render_camera)

    def close(self) -> None:
        self.sim.close()


def register_pick_cube_env(env_id: str = ENV_ID) -> str:
    """Register ``PickCubeEnv`` with gymnasium (``gymnasium.make(env_id, layout=...)``)."""
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point="hilserl_sim.pick_cube_env:PickCubeEnv")
    return env_id
