"""Host any gymnasium environment behind the bridge's topics ("bring your own env"). No ROS here.

Mapping (the same topics and service as the pick-cube scenes):

- observations: a ``Box`` observation is the state vector. A ``Dict`` observation is split:
  every uint8 entry of shape (H, W, 3) (or (H, W, 1)) is a camera named after its key;
  every other entry is flattened into the state vector, keys in sorted order. The state
  vector is also published as ``JointState`` positions named ``<key>/<i>`` (``state/<i>``
  for a Box).
- actions: the command's seven numbers ``[linear x, y, z, angular x, y, z, gripper]`` are
  picked by ``action_map`` (default: the first n for an n-dimensional action) and scaled
  from [-1, 1] to the ``Box`` action bounds. Only ``Box`` action spaces are accepted.
- reward: the environment's reward; success is ``info["is_success"]`` (or ``info["success"]``)
  when the environment reports it, otherwise False.
- reset: ``env.reset(seed=...)``; ``initial_state`` is not supported (an error says so).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hilserl_drivers.ee_control import sanitize_action, sanitize_gripper
from hilserl_sim.frame import Frame

COMMAND_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z", "gripper")


def _is_image_space(space) -> bool:
    shape = getattr(space, "shape", None)
    return (
        shape is not None
        and len(shape) == 3
        and shape[2] in (1, 3)
        and np.dtype(getattr(space, "dtype", None) or np.float64) == np.uint8
    )


class GymEnvHost:
    """A gymnasium environment driven by normalised end-effector-style commands."""

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None = None,
        action_map: Sequence[int] = (),
        render_observation: bool = False,
    ) -> None:
        import gymnasium as gym
        from gymnasium import spaces

        kwargs = dict(env_kwargs or {})
        if render_observation:
            kwargs.setdefault("render_mode", "rgb_array")
        try:
            env = gym.make(env_id, **kwargs)
        except Exception as exc:  # noqa: BLE001 - gymnasium raises many types; name the input
            raise ValueError(f"gym_env_id {env_id!r} with kwargs {kwargs} cannot be made: {exc}") from exc
        if render_observation:
            env = gym.wrappers.AddRenderObservation(env, render_only=False)
        self.env = env
        if not isinstance(env.action_space, spaces.Box) or len(env.action_space.shape) != 1:
            env.close()
            raise ValueError(f"gym_env_id {env_id!r}: only 1-D Box action spaces are supported, "
                             f"got {env.action_space}")
        n = env.action_space.shape[0]
        mapping = tuple(int(i) for i in action_map) if len(action_map) else tuple(range(min(n, 7)))
        if len(mapping) != n or any(not 0 <= i < len(COMMAND_FIELDS) for i in mapping):
            env.close()
            raise ValueError(
                f"gym_action_map must give, for each of the {n} action dimensions of {env_id!r}, an index "
                f"0..6 into {list(COMMAND_FIELDS)}; got {list(mapping)}"
            )
        self.action_map = np.array(mapping)
        self._low = env.action_space.low.astype(np.float64)
        self._high = env.action_space.high.astype(np.float64)
        if not (np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high))):
            env.close()
            raise ValueError(f"gym_env_id {env_id!r}: the action space must be bounded, got {env.action_space}")
        self._action_dtype = env.action_space.dtype

        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict):
            self._image_keys = tuple(sorted(k for k, s in obs_space.spaces.items() if _is_image_space(s)))
            self._state_keys = tuple(sorted(k for k in obs_space.spaces if k not in self._image_keys))
            names: list[str] = []
            for key in self._state_keys:
                size = int(np.prod(obs_space.spaces[key].shape or (1,)))
                names.extend(f"{key}/{i}" for i in range(size))
        elif isinstance(obs_space, spaces.Box):
            self._image_keys, self._state_keys = (), ()
            names = [f"state/{i}" for i in range(int(np.prod(obs_space.shape)))]
        else:
            env.close()
            raise ValueError(f"gym_env_id {env_id!r}: observation space {obs_space} is neither Box nor Dict")
        self.camera_names = self._image_keys
        self.joint_names = tuple(names)
        self._time = 0.0
        self._dt = float(getattr(env.unwrapped, "dt", 0.0) or 0.0)

    def _split(self, obs) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if isinstance(obs, dict):
            parts = [np.asarray(obs[k], dtype=np.float64).reshape(-1) for k in self._state_keys]
            state = np.concatenate(parts) if parts else np.zeros(0)
            images = {}
            for key in self._image_keys:
                image = np.asarray(obs[key], dtype=np.uint8)
                images[key] = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            return state, images
        return np.asarray(obs, dtype=np.float64).reshape(-1), {}

    def _frame(self, obs, reward=0.0, terminated=False, truncated=False, info=None) -> Frame:
        state, images = self._split(obs)
        info = info or {}
        success = bool(info.get("is_success", info.get("success", False)))
        zeros = np.zeros_like(state)
        return Frame(
            sim_time=self._time,
            joint_names=self.joint_names,
            joint_positions=state,
            joint_velocities=zeros,
            joint_efforts=zeros,
            state=state.astype(np.float32),
            images=images,
            reward=float(reward),
            success=success,
            terminated=bool(terminated),
            truncated=bool(truncated),
        )

    def command_to_action(self, deltas: np.ndarray, gripper: int) -> np.ndarray:
        """Scale the picked command entries from [-1, 1] to the action bounds."""
        command = np.concatenate([np.clip(np.asarray(deltas, dtype=np.float64), -1.0, 1.0), [float(gripper)]])
        picked = command[self.action_map]
        return (self._low + (picked + 1.0) * 0.5 * (self._high - self._low)).astype(self._action_dtype)

    def reset(self, seed: int | None = None, initial_state: Sequence[float] | None = None) -> Frame:
        if initial_state is not None and len(initial_state) > 0:
            raise ValueError("initial_state is not supported for gymnasium environments")
        obs, info = self.env.reset(seed=seed)
        self._time = 0.0
        return self._frame(obs, info=info)

    def step(self, deltas: np.ndarray, gripper: int) -> Frame:
        """One env step; a malformed command becomes the zero command (mid-range action)."""
        clean, rejected = sanitize_action(deltas)
        grip, grip_rejected = sanitize_gripper(gripper)
        obs, reward, terminated, truncated, info = self.env.step(self.command_to_action(clean, grip))
        self._time += self._dt
        return self._frame(obs, reward, terminated, truncated, info)._replace(rejected=rejected or grip_rejected)

    def hold(self) -> Frame:
        """No command: a gymnasium environment has no "stay", so it gets the zero command."""
        return self.step(np.zeros(6), 0)

    def close(self) -> None:
        self.env.close()
