"""What a bridged environment reports after a reset or a step, independent of ROS.

Both hosted kinds of environment produce a ``Frame``: the pick-cube scenes
(``PickCubeBridge``) and any gymnasium environment (``hilserl_sim.gym_bridge.GymEnvHost``).
The node turns a Frame into messages; nothing in here imports rclpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import numpy as np

from hilserl_sim.pick_cube import PickCubeConfig, PickCubeSim


class Frame(NamedTuple):
    sim_time: float
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    joint_efforts: np.ndarray
    state: np.ndarray
    """float32 observation vector (``Observation.state``)."""
    images: dict[str, np.ndarray]
    """Camera name -> (height, width, 3) uint8."""
    reward: float = 0.0
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    rejected: bool = False
    """The command of this step was malformed and replaced by hold."""
    ee_position: np.ndarray | None = None
    ee_quaternion: np.ndarray | None = None
    """(w, x, y, z); None where the environment has no end effector."""
    object_position: np.ndarray | None = None
    object_quaternion: np.ndarray | None = None
    """Privileged task state (the cube pose); None where there is none."""


class BridgedEnvironment(Protocol):
    """The interface the bridge node drives."""

    camera_names: tuple[str, ...]

    def reset(self, seed: int | None = None, initial_state: Sequence[float] | None = None) -> Frame: ...

    def step(self, deltas: np.ndarray, gripper: int) -> Frame: ...

    def hold(self) -> Frame:
        """One period with no command (the stream went silent): stop where it is."""
        ...

    def close(self) -> None: ...


class PickCubeBridge:
    """A PickCubeSim seen as a bridged environment, rendering the configured cameras."""

    def __init__(self, config: PickCubeConfig, cameras: Sequence[str] = ("front", "wrist"),
                 privileged_state: bool = True) -> None:
        self.sim = PickCubeSim(config)
        for camera in cameras:
            if camera not in self.sim.camera_names:
                self.sim.close()
                raise ValueError(f"cameras: {camera!r} is not a camera of the {config.arm} scene "
                                 f"({', '.join(self.sim.camera_names)})")
        self.camera_names = tuple(cameras)
        self.privileged_state = privileged_state

    def _frame(self, result=None) -> Frame:
        sim = self.sim
        state = sim.state()
        images = {name: sim.render(name) for name in self.camera_names}
        extra = {}
        if result is not None:
            extra = dict(reward=result.reward, success=result.success, terminated=result.terminated,
                         truncated=result.truncated, rejected=result.rejected)
        return Frame(
            sim_time=state.time,
            joint_names=state.joint_names,
            joint_positions=state.joint_positions,
            joint_velocities=state.joint_velocities,
            joint_efforts=state.joint_efforts,
            state=sim.observation_vector(state, privileged=self.privileged_state),
            images=images,
            ee_position=state.ee_position,
            ee_quaternion=state.ee_quaternion,
            object_position=state.cube_position,
            object_quaternion=state.cube_quaternion,
            **extra,
        )

    def reset(self, seed: int | None = None, initial_state: Sequence[float] | None = None) -> Frame:
        self.sim.reset(seed=seed, initial_state=initial_state)
        return self._frame()

    def step(self, deltas: np.ndarray, gripper: int) -> Frame:
        return self._frame(self.sim.step(deltas, gripper))

    def hold(self) -> Frame:
        return self._frame(self.sim.hold())

    def close(self) -> None:
        self.sim.close()
