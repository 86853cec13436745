"""Observation option ``dynamics``: joint velocities and efforts appended to any layout
(names, dim, values, bounds) and read from ``JointState`` by ``state_from_messages``."""

from types import SimpleNamespace

import numpy as np
import pytest

from hilserl_policy.observation import LAYOUT_NAMES, GripperCalibration, ObservationLayout, state_from_messages

NAMES = [f"joint{i}" for i in range(1, 8)] + ["right_driver_joint"]
Q = np.arange(8) * 0.1  # 7 arm joints, then the gripper joint
QD = -np.arange(8) * 0.01 - 0.005
TAU = np.array([1.5, -20.0, 0.3, 8.0, -1.0, 0.5, 0.02, 4.5])  # N m (the gripper's last)
EE = np.array([0.5, 0.0, 0.2])
CUBE = np.array([0.52, -0.03, 0.02])
BOX = ((0.3, -0.3, 0.015), (0.7, 0.3, 0.4))
EFFORT_LIMIT = [87.0] * 4 + [12.0] * 3 + [5.0]  # the Panda scene's actuator force ranges


def quantities():
    return dict(gripper_opening=0.75, ee_position=EE, cube_position=CUBE,
                joint_positions=Q, joint_velocities=QD, joint_efforts=TAU)


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_dynamics_appends_velocities_and_efforts_after_the_layout(name):
    plain = ObservationLayout(name)
    layout = ObservationLayout(name, dynamics=True)
    raw = plain.uses_joints  # "raw" layouts already hold the 7 arm velocities: not repeated
    velocity_names = ["gripper_vel"] if raw else [f"joint{i}_vel" for i in range(7)] + ["gripper_vel"]
    effort_names = [f"joint{i}_effort" for i in range(7)] + ["gripper_effort"]
    assert layout.names == plain.names + tuple(velocity_names + effort_names)
    assert len(set(layout.names)) == layout.dim == plain.dim + (9 if raw else 16)
    state = layout.build(**quantities())
    assert state.dtype == np.float32 and state.shape == (layout.dim,)
    np.testing.assert_array_equal(state[:plain.dim], plain.build(**quantities()))  # prefix unchanged
    expected = ([QD[7]] if raw else list(QD)) + list(TAU)
    np.testing.assert_allclose(state[plain.dim:], expected, rtol=1e-6)
    for i, value in enumerate(QD):  # every joint's velocity appears exactly once, by name
        label = f"joint{i}_vel" if i < 7 else "gripper_vel"
        assert state[layout.names.index(label)] == pytest.approx(value)


def test_dynamics_off_is_the_default_and_changes_nothing():
    assert ObservationLayout().dynamics is False
    assert ObservationLayout("relative").dim == 10 and ObservationLayout("raw").dim == 21
    # Efforts given to a layout without dynamics are ignored.
    np.testing.assert_array_equal(ObservationLayout("raw").build(**quantities()),
                                  ObservationLayout("raw").build(**{**quantities(), "joint_efforts": None}))


def test_dynamics_on_a_five_joint_arm():
    layout = ObservationLayout("proprio", num_joints=5, dynamics=True)
    assert layout.dim == 4 + 6 + 6
    assert layout.names[4:] == ("joint0_vel", "joint1_vel", "joint2_vel", "joint3_vel", "joint4_vel",
                                "gripper_vel", "joint0_effort", "joint1_effort", "joint2_effort",
                                "joint3_effort", "joint4_effort", "gripper_effort")
    state = layout.build(gripper_opening=0.5, ee_position=EE, joint_velocities=QD[:6], joint_efforts=TAU[:6])
    np.testing.assert_allclose(state[4:], [*QD[:6], *TAU[:6]], rtol=1e-6)


def test_dynamics_inputs_are_checked_by_name():
    layout = ObservationLayout("relative", dynamics=True)
    with pytest.raises(ValueError, match="joint_efforts is required"):
        layout.build(**{**quantities(), "joint_efforts": None})
    with pytest.raises(ValueError, match="joint_velocities must have at least 8"):
        layout.build(**{**quantities(), "joint_velocities": QD[:7]})  # the gripper's is missing
    with pytest.raises(ValueError, match="joint_efforts must be finite"):
        layout.build(**{**quantities(), "joint_efforts": [*TAU[:7], np.inf]})
    with pytest.raises(ValueError, match="dynamics"):
        ObservationLayout("relative", dynamics="yes")


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_dynamics_bounds_use_the_velocity_limit_and_effort_limit(name):
    layout = ObservationLayout(name, dynamics=True)
    low, high = layout.bounds(*BOX, -np.ones(7) * 3, np.ones(7) * 3, joint_velocity_limit=2.5,
                              effort_limit=EFFORT_LIMIT)
    assert len(low) == len(high) == layout.dim
    plain_low, plain_high = ObservationLayout(name).bounds(*BOX, -np.ones(7) * 3, np.ones(7) * 3,
                                                           joint_velocity_limit=2.5)
    assert low[:len(plain_low)] == plain_low and high[:len(plain_high)] == plain_high
    for i, limit in enumerate(EFFORT_LIMIT):
        label = f"joint{i}_effort" if i < 7 else "gripper_effort"
        assert (low[layout.names.index(label)], high[layout.names.index(label)]) == (-limit, limit)
    assert (low[layout.names.index("gripper_vel")], high[layout.names.index("gripper_vel")]) == (-2.5, 2.5)
    state = layout.build(**quantities())
    assert np.all(state >= np.array(low)) and np.all(state <= np.array(high))
    # One number serves every joint (a real arm's normalised load: 1.0).
    low, high = layout.bounds(*BOX, -np.ones(7) * 3, np.ones(7) * 3, effort_limit=1.0)
    assert low[-8:] == (-1.0,) * 8 and high[-8:] == (1.0,) * 8


def test_dynamics_bounds_need_a_valid_effort_limit():
    layout = ObservationLayout("relative", dynamics=True)
    with pytest.raises(ValueError, match="effort_limit is required"):
        layout.bounds(*BOX)
    with pytest.raises(ValueError, match="effort_limit must be one number or 8"):
        layout.bounds(*BOX, effort_limit=[1.0] * 7)
    with pytest.raises(ValueError, match="effort_limit must be > 0"):
        layout.bounds(*BOX, effort_limit=[1.0] * 7 + [0.0])
    with pytest.raises(ValueError, match="joint_velocity_limit"):
        layout.bounds(*BOX, joint_velocity_limit=0.0, effort_limit=1.0)


def _messages(names=NAMES, position=Q, velocity=QD, effort=TAU):
    """Duck-typed JointState and PoseStamped, as rclpy's and rosbags' messages are read."""
    joints = SimpleNamespace(name=list(names), position=list(position), velocity=list(velocity),
                             effort=list(effort))
    ee = SimpleNamespace(pose=SimpleNamespace(position=SimpleNamespace(x=EE[0], y=EE[1], z=EE[2])))
    task = SimpleNamespace(pose=SimpleNamespace(position=SimpleNamespace(x=CUBE[0], y=CUBE[1], z=CUBE[2])))
    return joints, ee, task


GRIPPER = GripperCalibration("right_driver_joint", closed_position=0.8, open_position=0.0)


@pytest.mark.parametrize("name", ["relative", "raw+relative"])
def test_state_from_messages_reads_velocity_and_effort(name):
    layout = ObservationLayout(name, dynamics=True)
    opening = GRIPPER.opening(NAMES, Q)
    expected = layout.build(**{**quantities(), "gripper_opening": opening})
    np.testing.assert_array_equal(state_from_messages(layout, GRIPPER, *_messages()), expected)
    # The gripper's velocity and effort are found by its name, wherever the driver put it
    # after the arm joints (here an extra joint rides between).
    names = NAMES[:7] + ["camera_tilt", NAMES[7]]
    joints, ee, task = _messages(names, [*Q[:7], 9.0, Q[7]], [*QD[:7], 9.0, QD[7]], [*TAU[:7], 9.0, TAU[7]])
    np.testing.assert_array_equal(state_from_messages(layout, GRIPPER, joints, ee, task), expected)


def test_state_from_messages_without_efforts_names_the_field():
    layout = ObservationLayout("relative", dynamics=True)
    with pytest.raises(ValueError, match="effort"):
        state_from_messages(layout, GRIPPER, *_messages(effort=[]))
    with pytest.raises(ValueError, match="velocity"):
        state_from_messages(layout, GRIPPER, *_messages(velocity=[]))
    with pytest.raises(ValueError, match="among the first 7"):
        state_from_messages(layout, GRIPPER, *_messages(names=[NAMES[7]] + NAMES[:7]))
    # Without dynamics a driver that reports no efforts is fine.
    plain = state_from_messages(ObservationLayout("relative"), GRIPPER, *_messages(effort=[]))
    assert plain.shape == (10,)


def test_state_from_messages_takes_real_joint_state_messages():
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    geometry_msgs = pytest.importorskip("geometry_msgs.msg")
    joints = sensor_msgs.JointState(name=NAMES, position=list(Q), velocity=list(QD), effort=list(TAU))
    ee, task = geometry_msgs.PoseStamped(), geometry_msgs.PoseStamped()
    ee.pose.position.x, ee.pose.position.y, ee.pose.position.z = (float(v) for v in EE)
    task.pose.position.x, task.pose.position.y, task.pose.position.z = (float(v) for v in CUBE)
    layout = ObservationLayout("relative", dynamics=True)
    state = state_from_messages(layout, GRIPPER, joints, ee, task)
    np.testing.assert_allclose(state[-16:], [*QD, *TAU], rtol=1e-6)
    with pytest.raises(ValueError, match="effort"):
        state_from_messages(layout, GRIPPER, sensor_msgs.JointState(name=NAMES, position=list(Q),
                                                                    velocity=list(QD)), ee, task)
