"""Safety limiter core: rejection reasons, clamps, counters; R3 through the pick-cube sim."""

import math
import os
import time

import numpy as np
import pytest

from hilserl_drivers.ee_control import GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, EndEffectorLimits
from hilserl_drivers.safety_limiter import REJECTION_REASONS, LimiterConfig, SafetyLimiter

LIMITS = EndEffectorLimits(
    position_low=(0.3, -0.3, 0.02),
    position_high=(0.7, 0.3, 0.4),
    max_step_translation=0.025,
    rpy_low=(0.0, 0.0, -0.5),
    rpy_high=(0.0, 0.0, 0.5),
    max_step_rotation=0.1,
    max_tracking_error=0.04,
)


def _limiter(**kwargs) -> SafetyLimiter:
    kwargs.setdefault("pose_timeout", 0.0)  # these tests move the clock, not the arm
    limiter = SafetyLimiter(LimiterConfig(limits=LIMITS, **kwargs))
    limiter.update_pose([0.5, 0.0, 0.2], now=0.0)
    return limiter


def test_a_good_command_passes_unchanged_and_three_deltas_are_padded():
    limiter = _limiter()
    out = limiter.limit([0.5, -0.25, 0.1], GRIPPER_CLOSE, stamp=1.0, now=1.01)
    assert out.rejected is None and not out.clamped
    np.testing.assert_allclose(out.deltas, [0.5, -0.25, 0.1, 0, 0, 0])
    assert out.gripper == GRIPPER_CLOSE
    out = limiter.limit([0.1, 0.2, 0.3, 0.0, 0.0, -0.4], GRIPPER_OPEN, stamp=1.1, now=1.11)
    np.testing.assert_allclose(out.deltas, [0.1, 0.2, 0.3, 0, 0, -0.4])
    assert limiter.accepted == 2 and limiter.total_rejected == 0


@pytest.mark.parametrize(
    ("deltas", "gripper", "reason"),
    [
        ([math.nan, 0, 0], GRIPPER_STAY, "malformed"),
        ([0, math.inf, 0, 0, 0, 0], GRIPPER_STAY, "malformed"),
        ([0, 0, -math.inf], GRIPPER_STAY, "malformed"),
        ([0.1, 0.2], GRIPPER_STAY, "malformed"),
        ([0.1] * 7, GRIPPER_STAY, "malformed"),
        ("abc", GRIPPER_STAY, "malformed"),
        (None, GRIPPER_STAY, "malformed"),
        ([1e6, 0, 0], GRIPPER_STAY, "out_of_range"),
        ([0, -1.5, 0], GRIPPER_STAY, "out_of_range"),
        ([0, 0, 0], 7, "bad_gripper"),
        ([0, 0, 0], True, "bad_gripper"),
        ([0, 0, 0], 0.5, "bad_gripper"),
    ],
)
def test_bad_commands_are_rejected_as_hold_and_counted(deltas, gripper, reason):
    limiter = _limiter()
    out = limiter.limit(deltas, gripper, stamp=1.0, now=1.0)
    assert out.rejected == reason
    np.testing.assert_array_equal(out.deltas, np.zeros(6))
    assert out.gripper == GRIPPER_STAY
    assert limiter.rejections[reason] == 1 and limiter.total_rejected == 1 and limiter.accepted == 0


def test_stale_future_and_out_of_order_stamps_are_rejected():
    limiter = _limiter(max_command_age=0.5, pose_timeout=0.0)
    assert limiter.limit([0, 0, 0], 0, stamp=9.0, now=10.0).rejected == "stale"
    assert limiter.limit([0, 0, 0], 0, stamp=11.0, now=10.0).rejected == "future"
    assert limiter.limit([0, 0, 0], 0, stamp=10.0, now=10.0).rejected is None
    assert limiter.limit([0, 0, 0], 0, stamp=10.0, now=10.1).rejected == "out_of_order"  # duplicate
    assert limiter.limit([0, 0, 0], 0, stamp=9.9, now=10.1).rejected == "out_of_order"
    assert limiter.limit([0, 0, 0], 0, stamp=10.05, now=10.1).rejected is None
    assert limiter.limit([0, 0, 0], 0, stamp=math.nan, now=10.1).rejected == "malformed"
    assert dict(limiter.rejections) == {"malformed": 1, "out_of_range": 0, "bad_gripper": 0, "stale": 1,
                                        "future": 1, "out_of_order": 2, "no_pose": 0}
    # age check off: an old stamp passes, order is still enforced
    relaxed = _limiter(max_command_age=0.0, pose_timeout=0.0)
    assert relaxed.limit([0, 0, 0], 0, stamp=1.0, now=1000.0).rejected is None
    assert relaxed.limit([0, 0, 0], 0, stamp=0.5, now=1000.0).rejected == "out_of_order"


def test_no_pose_or_an_old_pose_holds():
    limiter = SafetyLimiter(LimiterConfig(limits=LIMITS, pose_timeout=0.5))
    assert limiter.limit([1, 0, 0], 0, stamp=1.0, now=1.0).rejected == "no_pose"
    assert not limiter.update_pose([math.nan, 0, 0], now=1.0)
    assert not limiter.update_pose([0.5, 0.0], now=1.0)
    assert limiter.limit([1, 0, 0], 0, stamp=1.1, now=1.1).rejected == "no_pose"
    assert limiter.update_pose([0.5, 0.0, 0.2], now=1.2)
    assert limiter.limit([1, 0, 0], 0, stamp=1.2, now=1.3).rejected is None
    assert limiter.limit([1, 0, 0], 0, stamp=1.9, now=1.9).rejected == "no_pose"  # pose 0.7 s old
    assert limiter.rejections["no_pose"] == 3


def test_without_a_workspace_no_pose_is_needed_and_only_the_step_clamp_applies():
    limiter = SafetyLimiter(LimiterConfig(limits=LIMITS, pose_timeout=0.5, max_delta=0.5, workspace=False))
    out = limiter.limit([1.0, -0.2, 0.0, 0.0, 0.3, -1.0], 0, stamp=1.0, now=1.0)  # never a pose
    assert out.rejected is None and out.clamped
    np.testing.assert_allclose(out.deltas, [0.5, -0.2, 0.0, 0.0, 0.3, -0.5])  # rpy box not applied
    assert limiter.limit([math.nan, 0, 0], 0, stamp=1.1, now=1.1).rejected == "malformed"
    assert limiter.limit([2.0, 0, 0], 0, stamp=1.2, now=1.2).rejected == "out_of_range"
    assert limiter.limit([0.1, 0, 0], 0, stamp=0.9, now=1.3).rejected == "out_of_order"
    assert limiter.rejections["no_pose"] == 0


def test_per_step_clamp_and_box_clamp_only_shorten_steps():
    limiter = _limiter(max_delta=0.4)
    out = limiter.limit([1.0, -1.0, 0.2, 0, 0, 1.0], 0, stamp=1.0, now=1.0)
    assert out.clamped
    np.testing.assert_allclose(out.deltas, [0.4, -0.4, 0.2, 0, 0, 0.4])
    # 5 mm from the top of the box: +z is cut to 5 mm (0.2 of a 25 mm step), x passes
    limiter.update_pose([0.5, 0.0, 0.395], now=1.0)
    out = limiter.limit([0.3, 0.0, 1.0], 0, stamp=1.1, now=1.1)
    np.testing.assert_allclose(out.deltas, [0.3, 0, 0.2, 0, 0, 0], atol=1e-9)
    # measured 3 mm outside the box (overshoot): hold stays hold, outward is cut, inward passes
    limiter.update_pose([0.703, 0.0, 0.2], now=1.1)
    np.testing.assert_allclose(limiter.limit([0, 0, 0], 0, stamp=1.2, now=1.2).deltas, np.zeros(6))
    np.testing.assert_allclose(limiter.limit([0.4, 0, 0], 0, stamp=1.3, now=1.3).deltas, np.zeros(6))
    np.testing.assert_allclose(limiter.limit([-0.4, 0, 0], 0, stamp=1.4, now=1.4).deltas,
                               [-0.4, 0, 0, 0, 0, 0])
    # roll and pitch have an empty range: no rotation about them; yaw passes
    out = limiter.limit([0, 0, 0, 0.5, -0.5, 0.3], 0, stamp=1.5, now=1.5)
    np.testing.assert_allclose(out.deltas, [0, 0, 0, 0, 0, 0.3], atol=1e-12)
    assert limiter.total_rejected == 0


def test_bad_configuration_names_the_field():
    with pytest.raises(ValueError, match="max_delta"):
        SafetyLimiter(LimiterConfig(limits=LIMITS, max_delta=1.5))
    with pytest.raises(ValueError, match="max_command_age"):
        SafetyLimiter(LimiterConfig(limits=LIMITS, max_command_age=-1.0))
    with pytest.raises(ValueError, match="position_low"):
        SafetyLimiter(LimiterConfig(limits=EndEffectorLimits((0.8, 0, 0), (0.7, 0.3, 0.4))))


def test_every_reason_is_counted_in_a_mixed_stream():
    rng = np.random.default_rng(0)
    limiter = _limiter(max_command_age=0.5, pose_timeout=0.0)
    expected = {r: 0 for r in REJECTION_REASONS}
    t = 0.0
    for i in range(5000):
        t += 0.01
        kind = i % 6
        if kind == 0:
            d, g, stamp, reason = rng.uniform(-1, 1, 3), 0, t, None
            last_good = t
        elif kind == 1:
            d, g, stamp, reason = [math.nan, 0, 0], 0, t, "malformed"
        elif kind == 2:
            d, g, stamp, reason = [0, 1e6, 0], 0, t, "out_of_range"
        elif kind == 3:
            d, g, stamp, reason = [0, 0, 0], 3, t, "bad_gripper"
        elif kind == 4:
            d, g, stamp, reason = [0, 0, 0], 0, t - 2.0, "stale"
        else:
            d, g, stamp, reason = [0, 0, 0], 0, last_good - 0.001 * (i % 2), "out_of_order"
        out = limiter.limit(d, g, stamp=stamp, now=t)
        assert out.rejected == reason
        if reason is not None:
            expected[reason] += 1
    assert dict(limiter.rejections) == expected
    print(f"mixed stream: {limiter.accepted} accepted, rejections {dict(limiter.rejections)}")


def _adversarial_action(rng: np.random.Generator, i: int):
    """Half uniform, 30 % saturated (pushing into the walls), 10 % non-finite or huge, 10 % wrong length."""
    kind = i % 10
    if kind < 5:
        return rng.uniform(-1.0, 1.0, size=6)
    if kind < 8:
        return np.sign(rng.uniform(-1.0, 1.0, size=6))
    if kind == 8:
        return rng.choice([math.nan, math.inf, -math.inf, 1e6, -1e6], size=6)
    return rng.uniform(-1.0, 1.0, size=int(rng.choice([1, 2, 4, 5, 7, 8])))


def test_r3_hundred_thousand_adversarial_actions_through_the_limiter():
    """R3, limiter alone: 1e5 adversarial actions against a plant whose servo target follows each
    step (clamped to the box, as the driver does) and whose measured position misses it by up to
    4 mm in 20 % of the steps (servo overshoot, docs/sim.md). Every step the limiter lets out is
    within the clamp, ends inside the box when it starts inside, never moves further out when it
    starts outside, and nothing raises."""
    rng = np.random.default_rng(11)
    limiter = SafetyLimiter(LimiterConfig(limits=LIMITS, max_delta=0.8, max_command_age=0.5, pose_timeout=0.5))
    low, high = np.asarray(LIMITS.position_low), np.asarray(LIMITS.position_high)
    ee = servo = np.array([0.5, 0.0, 0.2])
    worst_step = worst_out = 0.0
    steps = 100_000
    for i in range(steps):
        t = 0.1 * (i + 1)
        limiter.update_pose(ee, now=t)
        stamp = t - (2.0 if i % 53 == 0 else 0.0)
        gripper = 5 if i % 17 == 0 else int(rng.integers(-1, 2))
        out = limiter.limit(_adversarial_action(rng, i), gripper, stamp=stamp, now=t)
        assert np.all(np.isfinite(out.deltas)) and np.all(np.abs(out.deltas) <= 0.8 + 1e-12)
        step = out.deltas[:3] * LIMITS.max_step_translation
        target = ee + step
        outside_before = np.maximum(low - ee, ee - high)
        outside_after = np.maximum(low - target, target - high)
        # inside stays inside; outside never gets further out on any axis
        assert np.all(outside_after <= np.maximum(outside_before, 0.0) + 1e-12), (ee, out.deltas)
        worst_step = max(worst_step, float(np.max(np.abs(step))))
        servo = np.clip(servo + step, low, high)
        ee = servo + rng.uniform(-0.004, 0.004, size=3) * (rng.random() < 0.2)
        worst_out = max(worst_out, float(np.max(outside_after)))
    print(f"R3 limiter alone, {steps} actions: worst commanded step {worst_step * 1e3:.2f} mm (clamp "
          f"{0.8 * LIMITS.max_step_translation * 1e3:.0f} mm), worst commanded target outside the box "
          f"{max(worst_out, 0.0) * 1e3:.2f} mm (only after an injected overshoot of <= 4 mm); "
          f"{limiter.accepted} accepted, {limiter.clamped} clamped, rejections {dict(limiter.rejections)}")
    assert worst_step <= 0.8 * LIMITS.max_step_translation + 1e-12
    assert worst_out <= 0.004 + 1e-9
    assert limiter.total_rejected >= 0.2 * steps


R3_SIM_STEPS = int(os.environ.get("HILSERL_R3_SIM_STEPS", "10000"))
"""Actions of the limiter + PickCubeSim run. 1e5 takes about 4 CPU-minutes here (too long for the
600 s test timeout on two shared cores): HILSERL_R3_SIM_STEPS=100000 runs the full row."""


def test_r3_adversarial_actions_through_limiter_and_sim():
    """R3 in sim: random, saturated and malformed actions through the limiter into PickCubeSim.

    Measured end effector inside the box + 5 mm (free motion; 12 mm while pressing on the
    cube or table, as the sim's own R3 test allows), measured per-step motion within the
    step limit + 5 mm (servo tolerance, docs/sim.md), no exception.
    """
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from hilserl_sim.pick_cube import PickCubeConfig, PickCubeSim

    sim = PickCubeSim(PickCubeConfig(arm="panda"))
    limits = sim.limits
    limiter = SafetyLimiter(LimiterConfig(limits=limits, max_delta=1.0, max_command_age=0.5, pose_timeout=0.5))
    rng = np.random.default_rng(3)
    margin = 0.005
    steps = R3_SIM_STEPS
    worst_out = worst_out_contact = worst_step = 0.0
    t = 0.0
    arm_geoms = _arm_geoms(sim)
    sim.reset(seed=0)
    previous = sim.ee_position()
    start = time.perf_counter()
    try:
        for i in range(steps):
            t += 0.1
            limiter.update_pose(sim.ee_position(), now=t)
            stamp = t - (2.0 if i % 53 == 0 else 0.0)
            out = limiter.limit(_adversarial_action(rng, i), int(rng.integers(-1, 2)), stamp=stamp, now=t)
            assert np.all(np.isfinite(out.deltas)) and np.all(np.abs(out.deltas) <= 1.0)
            result = sim.step(out.deltas, out.gripper)
            assert not result.rejected  # nothing malformed reaches the sim
            ee = sim.ee_position()
            outside = float(np.max(np.maximum(np.asarray(limits.position_low) - ee,
                                              ee - np.asarray(limits.position_high))))
            if _arm_touches_something(sim, arm_geoms):
                worst_out_contact = max(worst_out_contact, outside)
            else:
                worst_out = max(worst_out, outside)
            worst_step = max(worst_step, float(np.max(np.abs(ee - previous))))
            previous = ee
            if result.terminated or result.truncated:
                sim.reset(seed=i)
                previous = sim.ee_position()
    finally:
        sim.close()
    print(f"R3 limiter+sim, {steps} actions in {time.perf_counter() - start:.0f} s: worst outside box "
          f"{worst_out * 1e3:.2f} mm free, {worst_out_contact * 1e3:.2f} mm in contact, worst measured step "
          f"{worst_step * 1e3:.2f} mm (limit {limits.max_step_translation * 1e3:.0f} mm); {limiter.accepted} "
          f"accepted, {limiter.clamped} clamped, rejections {dict(limiter.rejections)}")
    assert limiter.total_rejected >= steps * 0.2
    assert worst_out <= margin
    assert worst_out_contact <= 0.012
    assert worst_step <= limits.max_step_translation + margin


def _arm_geoms(sim) -> np.ndarray:
    """Per geom: whether it belongs to the arm (its contacts mean the arm presses on something)."""
    model = sim.model
    return np.array([model.body(model.geom_bodyid[g]).name.startswith("arm/") for g in range(model.ngeom)])


def _arm_touches_something(sim, arm_geoms: np.ndarray) -> bool:
    ncon = sim.data.ncon
    if ncon == 0:
        return False
    contact = sim.data.contact
    return bool(np.any(arm_geoms[contact.geom1[:ncon]] | arm_geoms[contact.geom2[:ncon]]))
