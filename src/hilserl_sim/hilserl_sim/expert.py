"""Scripted pick-cube expert: approach, descend, grasp, lift. No ROS in here.

It reads only what the bridge publishes (end-effector position, cube position, gripper
opening) and answers with a normalised command (six deltas + gripper), so the same
object can drive the core directly, make demonstrations, or act as the simulated
person who takes over through the intervention mux.

Noise: Gaussian noise of ``noise_std`` is added to the translation deltas (before
clipping), so demonstrations are not all identical and the policy sees recoveries.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from hilserl_drivers.ee_control import ACTION_DIM, GRIPPER_CLOSE, GRIPPER_OPEN


class Phase(enum.IntEnum):
    APPROACH = 0
    DESCEND = 1
    GRASP = 2
    LIFT = 3


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Tuning of the scripted expert (distances in metres, base frame)."""

    max_step_translation: float = 0.025
    """The limiter's per-step translation: converts a wanted motion into a normalised delta."""
    hover_height: float = 0.05
    """Height above the grasp point reached before descending."""
    grasp_offset: float = 0.0
    """Vertical offset of the end-effector site from the cube centre when closing."""
    xy_tolerance: float = 0.008
    z_tolerance: float = 0.006
    close_steps: int = 4
    """Steps spent closing the gripper before lifting."""
    lift_height: float = 0.13
    """How far above the cube's start the expert carries it (above the success threshold)."""
    gain: float = 1.0
    """Fraction of the remaining error commanded per step (1 = go there in one step if allowed)."""
    noise_std: float = 0.0
    lost_distance: float = 0.05
    """While lifting, a cube farther than this from the end effector counts as dropped: retry."""
    miss_distance: float = 0.0
    """Failure demonstrations (0: off): grasp this far beside the cube, in a direction drawn per
    episode, and lift the empty gripper as if holding it (negatives for a reward classifier)."""

    def validate(self) -> None:
        for name in ("max_step_translation", "hover_height", "xy_tolerance", "z_tolerance", "lift_height",
                     "gain", "lost_distance"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("noise_std", "miss_distance"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if int(self.close_steps) != self.close_steps or self.close_steps < 1:
            raise ValueError(f"close_steps must be a positive integer, got {self.close_steps!r}")


EXPERT_DEFAULTS: dict[str, ExpertConfig] = {
    "panda": ExpertConfig(max_step_translation=0.025, hover_height=0.06, grasp_offset=0.0, close_steps=4),
    "so101": ExpertConfig(max_step_translation=0.015, hover_height=0.04, grasp_offset=0.0, close_steps=4,
                          xy_tolerance=0.005, z_tolerance=0.005, lost_distance=0.04),
}


class ScriptedExpert:
    """Approach-grasp-lift controller with a small state machine and retry on a drop."""

    def __init__(self, config: ExpertConfig, seed: int | None = None) -> None:
        config.validate()
        self.config = config
        self._rng = np.random.default_rng(seed)
        self.phase = Phase.APPROACH
        self._closing = 0
        self._cube_start: np.ndarray | None = None
        self._miss: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.phase = Phase.APPROACH
        self._closing = 0
        self._cube_start = None
        self._miss = None

    def _deltas(self, error: np.ndarray) -> np.ndarray:
        cfg = self.config
        move = np.clip(cfg.gain * error / cfg.max_step_translation, -1.0, 1.0)
        if cfg.noise_std > 0:
            move = move + self._rng.normal(0.0, cfg.noise_std, size=3)
        deltas = np.zeros(ACTION_DIM)
        deltas[:3] = np.clip(move, -1.0, 1.0)
        return deltas

    def act(self, ee_position: np.ndarray, cube_position: np.ndarray, gripper_opening: float) -> tuple[np.ndarray, int]:
        """Return (six normalised deltas, gripper command) for the current measurements."""
        cfg = self.config
        ee = np.asarray(ee_position, dtype=float)
        cube = np.asarray(cube_position, dtype=float)
        missing = cfg.miss_distance > 0
        if missing:  # aim at a point beside where the cube started (not following a nudged cube)
            if self._miss is None:
                angle = self._rng.uniform(0.0, 2 * np.pi)
                self._miss = cfg.miss_distance * np.array([np.cos(angle), np.sin(angle), 0.0])
            cube = self._cube_start.copy() if self._cube_start is not None else cube + self._miss
        if self._cube_start is None:
            self._cube_start = cube.copy()
        grasp_point = cube + np.array([0.0, 0.0, cfg.grasp_offset])

        if self.phase == Phase.LIFT and not missing and np.linalg.norm(cube - ee) > cfg.lost_distance:
            self.phase = Phase.APPROACH  # dropped: open and start over from above the cube
            self._closing = 0
        if self.phase == Phase.GRASP and np.linalg.norm(cube[:2] - ee[:2]) > 2 * cfg.xy_tolerance + 0.01:
            self.phase = Phase.APPROACH  # pushed the cube away while closing
            self._closing = 0

        if self.phase == Phase.APPROACH:
            hover = grasp_point + np.array([0.0, 0.0, cfg.hover_height])
            error = hover - ee
            if np.linalg.norm(error[:2]) < cfg.xy_tolerance and abs(error[2]) < cfg.z_tolerance * 2:
                self.phase = Phase.DESCEND
            else:
                # Rise first when low and far, so the fingers do not sweep the cube away.
                if np.linalg.norm(error[:2]) > 2 * cfg.xy_tolerance and ee[2] < hover[2] - 0.02:
                    error[:2] *= 0.3
                return self._deltas(error), GRIPPER_OPEN
        if self.phase == Phase.DESCEND:
            error = grasp_point - ee
            if abs(error[2]) < cfg.z_tolerance and np.linalg.norm(error[:2]) < cfg.xy_tolerance * 1.5:
                self.phase = Phase.GRASP
                self._closing = 0
            else:
                return self._deltas(error), GRIPPER_OPEN
        if self.phase == Phase.GRASP:
            self._closing += 1
            if self._closing >= cfg.close_steps:
                self.phase = Phase.LIFT
            error = grasp_point - ee
            error[2] = 0.0
            return self._deltas(error * 0.5), GRIPPER_CLOSE
        # LIFT
        goal = np.array([self._cube_start[0], self._cube_start[1], self._cube_start[2] + cfg.lift_height])
        goal[:2] = ee[:2]  # lift straight up
        return self._deltas(goal - ee), GRIPPER_CLOSE


def run_expert_episode(sim, expert: ScriptedExpert, seed: int) -> tuple[bool, int]:
    """Run one seeded episode of ``sim`` (a PickCubeSim) under ``expert``; return (success, steps)."""
    state = sim.reset(seed=seed)
    expert.reset(seed=seed)
    for step in range(sim.config.max_episode_steps):
        deltas, gripper = expert.act(state.ee_position, state.cube_position, state.gripper_opening)
        result = sim.step(deltas, gripper)
        state = sim.state()
        if result.success:
            return True, step + 1
        if result.terminated or result.truncated:
            break
    return False, sim.config.max_episode_steps
