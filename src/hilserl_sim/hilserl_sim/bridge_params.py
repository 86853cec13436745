"""Parameters of the sim bridge node: one frozen dataclass, validated in one place.

``BridgeParams`` and ``make_environment`` are ROS-free; ``declare_bridge_parameters``
declares every parameter on a node (with a descriptor) and reads them once.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from hilserl_drivers.ee_control import EndEffectorLimits
from hilserl_drivers.image_msgs import IMAGE_QOS
from hilserl_sim.scenes import ARMS

MODES = ("realtime", "lockstep")
SCENES = (*ARMS, "gym")


@dataclasses.dataclass(frozen=True)
class BridgeParams:
    scene: str = "panda"
    """'panda', 'so101' (pick-cube scenes) or 'gym' (host gym_env_id)."""
    mode: str = "realtime"
    """'realtime': step on a timer at control_rate_hz; 'lockstep': one step per command, as fast as possible."""
    control_rate_hz: float = 10.0
    physics_timestep: float = 0.004
    cameras: tuple[str, ...] = ("front", "wrist")
    """Cameras rendered and published on camera/<name>/image_raw (pick-cube scenes)."""
    image_width: int = 128
    image_height: int = 128
    max_episode_steps: int = 100
    lift_height: float = 0.1
    cube_spawn_low: tuple[float, ...] = ()
    cube_spawn_high: tuple[float, ...] = ()
    cube_yaw_range: float = 0.0
    arm_start_noise: float = 0.03
    bounds_low: tuple[float, ...] = ()
    bounds_high: tuple[float, ...] = ()
    max_step_translation: float = 0.0
    max_step_rotation: float = 0.0
    rpy_low: tuple[float, ...] = ()
    rpy_high: tuple[float, ...] = ()
    max_tracking_error: float = 0.0
    command_timeout: float = 0.15
    """Realtime mode: a command older than this is replaced by hold (watchdog)."""
    frame_id: str = "base"
    image_qos: str = "sensor_data"
    """'sensor_data' (best effort) or 'reliable': a lock-step graph whose reward or recording needs every frame."""
    privileged_state: bool = True
    seed: int = -1
    """Seed of the first episode; -1 draws one."""
    gym_env_id: str = ""
    gym_env_kwargs: str = "{}"
    gym_action_map: tuple[int, ...] = ()
    gym_render_observation: bool = False

    @classmethod
    def for_scene(cls, scene: str) -> "BridgeParams":
        """Defaults, with the arm's bounds, limits and spawn area filled in."""
        if scene not in ARMS:
            return cls(scene=scene, cameras=())
        arm = ARMS[scene]
        lim = arm.limits
        return cls(
            scene=scene,
            cube_spawn_low=tuple(arm.cube_spawn_low),
            cube_spawn_high=tuple(arm.cube_spawn_high),
            bounds_low=tuple(lim.position_low),
            bounds_high=tuple(lim.position_high),
            max_step_translation=lim.max_step_translation,
            max_step_rotation=lim.max_step_rotation,
            rpy_low=tuple(lim.rpy_low),
            rpy_high=tuple(lim.rpy_high),
            max_tracking_error=lim.max_tracking_error,
        )

    def limits(self) -> EndEffectorLimits:
        return EndEffectorLimits(
            position_low=tuple(self.bounds_low),
            position_high=tuple(self.bounds_high),
            max_step_translation=self.max_step_translation,
            rpy_low=tuple(self.rpy_low),
            rpy_high=tuple(self.rpy_high),
            max_step_rotation=self.max_step_rotation,
            max_tracking_error=self.max_tracking_error,
        )

    def pick_cube_config(self):
        from hilserl_sim.pick_cube import PickCubeConfig

        return PickCubeConfig(
            arm=self.scene,
            control_period=1.0 / self.control_rate_hz,
            physics_timestep=self.physics_timestep,
            max_episode_steps=self.max_episode_steps,
            lift_height=self.lift_height,
            cube_spawn_low=tuple(self.cube_spawn_low),
            cube_spawn_high=tuple(self.cube_spawn_high),
            cube_yaw_range=self.cube_yaw_range,
            arm_start_noise=self.arm_start_noise,
            limits=self.limits(),
            image_width=self.image_width,
            image_height=self.image_height,
        )

    def gym_kwargs(self) -> dict:
        try:
            value = json.loads(self.gym_env_kwargs)
        except json.JSONDecodeError as exc:
            raise ValueError(f"gym_env_kwargs is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValueError(f"gym_env_kwargs must be a JSON object, got {self.gym_env_kwargs!r}")
        return value

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        if self.scene not in SCENES:
            raise ValueError(f"scene must be one of {list(SCENES)}, got {self.scene!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if not (np.isfinite(self.control_rate_hz) and 0.0 < self.control_rate_hz <= 1000.0):
            raise ValueError(f"control_rate_hz must be in (0, 1000], got {self.control_rate_hz}")
        if not (np.isfinite(self.command_timeout) and self.command_timeout > 0.0):
            raise ValueError(f"command_timeout must be > 0 s, got {self.command_timeout}")
        if not all(isinstance(c, str) and c for c in self.cameras):
            raise ValueError(f"cameras must be camera names, got {list(self.cameras)}")
        if not self.frame_id:
            raise ValueError("frame_id must not be empty")
        if self.image_qos not in IMAGE_QOS:
            raise ValueError(f"image_qos must be one of {IMAGE_QOS}, got {self.image_qos!r}")
        if self.scene == "gym":
            if not self.gym_env_id:
                raise ValueError("gym_env_id must name a gymnasium environment when scene is 'gym'")
            self.gym_kwargs()
            return
        for name in ("bounds_low", "bounds_high", "rpy_low", "rpy_high"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} must be 3 numbers (x, y, z), got {list(getattr(self, name))}")
        for name in ("cube_spawn_low", "cube_spawn_high"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must be 2 numbers (x, y), got {list(getattr(self, name))}")
        try:
            self.pick_cube_config().validate()
        except ValueError as exc:  # the core names its own fields; say the parameter names
            message = str(exc)
            for core, param in (("position_low", "bounds_low"), ("position_high", "bounds_high"),
                                ("control_period", "control_rate_hz")):
                message = message.replace(core, param)
            raise ValueError(message) from None


def make_environment(params: BridgeParams):
    """The bridged environment the parameters describe."""
    params.validate()
    if params.scene == "gym":
        from hilserl_sim.gym_bridge import GymEnvHost

        return GymEnvHost(params.gym_env_id, params.gym_kwargs(), params.gym_action_map,
                          params.gym_render_observation)
    from hilserl_sim.frame import PickCubeBridge

    return PickCubeBridge(params.pick_cube_config(), params.cameras, params.privileged_state)


DESCRIPTIONS = {
    "scene": "pick-cube scene ('panda', 'so101') or 'gym' to host gym_env_id",
    "mode": "'realtime' (timer at control_rate_hz) or 'lockstep' (one step per command)",
    "control_rate_hz": "control steps per second of simulated (and, in realtime mode, wall) time",
    "physics_timestep": "MuJoCo timestep in s; must divide the control period",
    "cameras": "cameras published on camera/<name>/image_raw (a list, or a comma-separated string); "
               "'' (empty string: a parameter file cannot hold an empty list): state only",
    "image_width": "rendered image width in pixels",
    "image_height": "rendered image height in pixels",
    "max_episode_steps": "steps before an episode is truncated (time-out)",
    "lift_height": "success: cube lifted this far (m) above its resting height",
    "cube_spawn_low": "lower corner (x, y) of the random cube start area, base frame (m)",
    "cube_spawn_high": "upper corner (x, y) of the random cube start area, base frame (m)",
    "cube_yaw_range": "cube start yaw drawn in [-range, range] (rad)",
    "arm_start_noise": "end-effector start drawn within +/- this of the home pose, per axis (m)",
    "bounds_low": "end-effector bounds box, lower corner (x, y, z), base frame (m)",
    "bounds_high": "end-effector bounds box, upper corner (x, y, z), base frame (m)",
    "max_step_translation": "translation per step for a normalised delta of 1 (m); the per-step limit",
    "max_step_rotation": "rotation per step for a normalised delta of 1 (rad); the per-step limit",
    "rpy_low": "lower bound of the roll/pitch/yaw offset from the home orientation (rad)",
    "rpy_high": "upper bound of the roll/pitch/yaw offset from the home orientation (rad)",
    "max_tracking_error": "largest distance kept between target and measured end effector (m)",
    "command_timeout": "realtime mode: commands older than this (s) are replaced by hold",
    "frame_id": "frame of ee_pose and task_state (the robot base)",
    "image_qos": "QoS of the camera images: 'sensor_data' (best effort) or 'reliable' (every frame delivered: "
                 "a lock-step graph whose reward or recording needs each one; its subscribers must be reliable too)",
    "privileged_state": "append the cube position to the reset observation's state vector",
    "seed": "seed of the first episode (-1: random)",
    "gym_env_id": "gymnasium environment id hosted when scene is 'gym'",
    "gym_env_kwargs": "JSON object of keyword arguments for gymnasium.make",
    "gym_action_map": "per action dimension, index 0..6 into [lin x,y,z, ang x,y,z, gripper]; empty: identity",
    "gym_render_observation": "add the environment's rendered frame as camera 'pixels'",
}


def declare_bridge_parameters(node) -> BridgeParams:
    """Declare every parameter (read-only, with descriptors) on ``node`` and return them, validated."""
    from rcl_interfaces.msg import ParameterDescriptor

    def declare(name, default, dynamic=False):
        descriptor = ParameterDescriptor(description=DESCRIPTIONS[name], read_only=True, dynamic_typing=dynamic)
        return node.declare_parameter(name, default, descriptor).value

    scene = declare("scene", "panda")
    defaults = BridgeParams.for_scene(scene)
    values = {"scene": scene}
    for field in dataclasses.fields(BridgeParams):
        if field.name == "scene":
            continue
        default = getattr(defaults, field.name)
        if isinstance(default, tuple):
            # Lists may be empty, which ROS cannot type (and a YAML parameter file cannot
            # hold: an empty list there is ignored): accept any list, or a comma-separated
            # string ("" = empty), and check it here.
            value = declare(field.name, list(default) if default else [], dynamic=True)
            if isinstance(value, str):
                value = [item.strip() for item in value.split(",") if item.strip()]
            try:
                values[field.name] = tuple(value) if value is not None else ()
            except TypeError:
                raise ValueError(f"{field.name} must be a list, got {value!r}") from None
        else:
            values[field.name] = declare(field.name, default)
    params = BridgeParams(**values)
    params.validate()
    return params
