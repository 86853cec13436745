"""Pick-cube core: determinism, success detection, limits under random actions, expert, rendering."""

import dataclasses
import math

import numpy as np
import pytest

from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert, run_expert_episode
from hilserl_sim.pick_cube import PickCubeConfig, PickCubeSim

ARMS = ("panda", "so101")
MARGIN = 0.005  # R3: measured end effector within the box + 5 mm, per-step motion within limit + 5 mm


@pytest.fixture(scope="module", params=ARMS)
def sim(request):
    simulation = PickCubeSim(PickCubeConfig(arm=request.param))
    yield simulation
    simulation.close()


def test_reset_is_deterministic_for_a_seed(sim):
    first = sim.reset(seed=123)
    for _ in range(5):
        sim.step(np.array([0.3, -0.2, -0.5, 0, 0, 0.1]), -1)
    after_first = sim.state()
    again = sim.reset(seed=123)
    for _ in range(5):
        sim.step(np.array([0.3, -0.2, -0.5, 0, 0, 0.1]), -1)
    after_again = sim.state()
    np.testing.assert_array_equal(first.cube_position, again.cube_position)
    np.testing.assert_array_equal(first.joint_positions, again.joint_positions)
    np.testing.assert_array_equal(after_first.joint_positions, after_again.joint_positions)
    np.testing.assert_array_equal(after_first.cube_position, after_again.cube_position)
    other = sim.reset(seed=124)
    assert not np.allclose(other.cube_position, first.cube_position)


def test_reset_randomises_cube_inside_spawn_area_and_arm_start(sim):
    low, high = sim.config.spawn_area()
    cubes, ees = [], []
    for seed in range(20):
        state = sim.reset(seed=seed)
        assert np.all(state.cube_position[:2] >= low - 1e-9) and np.all(state.cube_position[:2] <= high + 1e-9)
        assert abs(state.cube_position[2] - sim.cube_half_size) < 1e-9
        assert sim.limits.contains(state.ee_position, MARGIN)
        cubes.append(state.cube_position[:2])
        ees.append(state.ee_position)
    assert np.ptp(np.array(cubes), axis=0).min() > 0.3 * (high - low).min()
    assert np.ptp(np.array(ees), axis=0).max() > 0.01


def test_initial_state_places_cube_and_rejects_bad_length(sim):
    low, high = sim.config.spawn_area()
    centre = (low + high) / 2
    state = sim.reset(initial_state=[centre[0], centre[1], 0.3])
    np.testing.assert_allclose(state.cube_position[:2], centre, atol=1e-9)
    with pytest.raises(ValueError, match="initial_state"):
        sim.reset(initial_state=[0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="initial_state"):
        sim.reset(initial_state=[math.nan, 0.0])


def _lift_with_expert(sim, seed=0):
    expert = ScriptedExpert(EXPERT_DEFAULTS[sim.config.arm])
    state = sim.reset(seed=seed)
    expert.reset(seed)
    for _ in range(sim.config.max_episode_steps):
        deltas, gripper = expert.act(state.ee_position, state.cube_position, state.gripper_opening)
        result = sim.step(deltas, gripper)
        state = sim.state()
        if result.success:
            return result
    raise AssertionError("expert did not lift the cube")


def test_success_detection_lifted_not_lifted_dropped(sim):
    # not lifted: at the start, and while resting on the table
    sim.reset(seed=3)
    assert not sim.is_success()
    result = sim.step(np.zeros(6), 0)
    assert not result.success and result.reward == 0.0 and not result.terminated

    # lifted: a real grasp and lift ends the episode with reward 1
    result = _lift_with_expert(sim, seed=3)
    assert result.success and result.reward == 1.0 and result.terminated and not result.truncated
    assert sim.cube_position()[2] - sim.cube_rest_z >= sim.config.lift_height

    # dropped: open the gripper, the cube falls back to the table -> no success
    for _ in range(10):
        result = sim.step(np.zeros(6), 1)
    assert not result.success and result.reward == 0.0
    assert sim.cube_position()[2] < sim.cube_rest_z + 0.01

    # thrown: high but far from the end effector -> not a success
    sim.reset(seed=3)
    qadr = sim._cube_qpos
    sim.data.qpos[qadr : qadr + 3] = sim.ee_position() + np.array([0.0, 0.2, 0.0])
    sim.data.qpos[qadr + 2] = sim.cube_rest_z + sim.config.lift_height + 0.05
    import mujoco

    mujoco.mj_forward(sim.model, sim.data)
    assert not sim.is_success()


def test_timeout_truncates_without_terminating(sim):
    original = sim.config
    sim.config = dataclasses.replace(original, max_episode_steps=3)
    try:
        sim.reset(seed=0)
        results = [sim.step(np.zeros(6), 0) for _ in range(3)]
    finally:
        sim.config = original
    assert [r.truncated for r in results] == [False, False, True]
    assert not any(r.terminated for r in results)


def _arm_touches_something(sim) -> bool:
    model, data = sim.model, sim.data
    for contact in data.contact[: data.ncon]:
        for geom in (contact.geom1, contact.geom2):
            if model.body(model.geom_bodyid[geom]).name.startswith("arm/"):
                return True
    return False


def test_ten_thousand_random_actions_stay_in_box_and_step_limit(sim):
    """R3 in simulation: 10 000 random and saturated commands (NaN among them).

    The commanded pose is guaranteed exactly. The measured end effector must stay within
    5 mm of the box in free motion; when the fingers press on the cube or the table, the
    servos yield (as real ones do), and a looser 12 mm bound is checked and reported.
    """
    rng = np.random.default_rng(7)
    limits = sim.limits
    sim.reset(seed=0)
    previous = sim.ee_position()
    previous_cmd, _ = sim.ik.forward(sim.q_command)
    worst_out = worst_out_contact = worst_step = worst_cmd_step = 0.0
    rejected = 0
    for i in range(10_000):
        action = rng.uniform(-1.0, 1.0, size=6) if i % 3 else np.sign(rng.uniform(-1.0, 1.0, size=6))
        if i % 97 == 0:
            action[i % 6] = math.nan
        result = sim.step(action, int(rng.integers(-1, 2)))
        rejected += result.rejected
        ee = sim.ee_position()
        commanded, _ = sim.ik.forward(sim.q_command)
        assert limits.contains(commanded, 1e-9), commanded
        outside = np.maximum(np.asarray(limits.position_low) - ee, ee - np.asarray(limits.position_high))
        if _arm_touches_something(sim):
            worst_out_contact = max(worst_out_contact, float(outside.max()))
        else:
            worst_out = max(worst_out, float(outside.max()))
        worst_step = max(worst_step, float(np.max(np.abs(ee - previous))))
        worst_cmd_step = max(worst_cmd_step, float(np.max(np.abs(commanded - previous_cmd))))
        previous, previous_cmd = ee, commanded
        if result.terminated or result.truncated:
            sim.reset(seed=i)
            previous = sim.ee_position()
            previous_cmd, _ = sim.ik.forward(sim.q_command)
    print(
        f"{sim.config.arm}: worst outside box {worst_out * 1e3:.1f} mm free, "
        f"{worst_out_contact * 1e3:.1f} mm in contact, worst measured step "
        f"{worst_step * 1e3:.1f} mm, worst commanded step {worst_cmd_step * 1e3:.1f} mm "
        f"(limit {limits.max_step_translation * 1e3:.1f} mm), {rejected} rejected"
    )
    assert rejected >= 100
    assert worst_cmd_step <= limits.max_step_translation + 1e-6
    assert worst_out <= MARGIN
    assert worst_out_contact <= 0.012
    assert worst_step <= limits.max_step_translation + MARGIN


def test_malformed_commands_hold_the_arm(sim):
    sim.reset(seed=5)
    for _ in range(5):
        sim.step(np.zeros(6), 0)
    start = sim.ee_position()
    for bad in ([math.nan] * 6, [math.inf] * 6, [1.0] * 5, [0.0] * 7):
        result = sim.step(bad, 0)
        assert result.rejected
    result = sim.step(np.zeros(6), 5)
    assert result.rejected
    drift = float(np.linalg.norm(sim.ee_position() - start))
    print(f"{sim.config.arm}: drift while holding on bad commands {drift * 1e3:.2f} mm")
    assert drift <= 0.002


def test_scripted_expert_success_rate_reduced_count(sim):
    """20 seeded episodes with noise; the full 100-episode figure comes from bench/expert_success.py."""
    config = dataclasses.replace(EXPERT_DEFAULTS[sim.config.arm], noise_std=0.1)
    expert = ScriptedExpert(config)
    outcomes = [run_expert_episode(sim, expert, seed=1000 + seed) for seed in range(20)]
    successes = sum(ok for ok, _ in outcomes)
    print(f"{sim.config.arm}: expert {successes}/20, mean steps {np.mean([n for ok, n in outcomes if ok]):.1f}")
    assert successes >= (19 if sim.config.arm == "panda" else 18)


def test_render_returns_declared_size_uint8(sim):
    sim.reset(seed=0)
    for camera in ("front", "wrist"):
        image = sim.render(camera)
        assert image.shape == (sim.config.image_height, sim.config.image_width, 3)
        assert image.dtype == np.uint8
        assert image.std() > 5.0  # a scene, not a blank buffer
    other = sim.render("front", width=64, height=48)
    assert other.shape == (48, 64, 3)
    with pytest.raises(ValueError, match="unknown camera"):
        sim.render("no_such_camera")


def test_wrist_camera_sees_the_cube_red():
    sim = PickCubeSim(PickCubeConfig(arm="panda", arm_start_noise=0.0))
    try:
        sim.reset(initial_state=[0.5, 0.0, 0.0, 0.5, 0.0, 0.2])
        image = sim.render("wrist").astype(int)
        red = (image[..., 0] > 150) & (image[..., 0] > image[..., 1] + 60) & (image[..., 0] > image[..., 2] + 60)
        assert red.sum() > 10
    finally:
        sim.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("arm", "ur5"),
        ("control_period", 0.0),
        ("physics_timestep", 0.03),
        ("max_episode_steps", 0),
        ("cube_spawn_low", (0.7, 0.2)),
        ("image_width", -1),
        ("lift_height", math.nan),
    ],
)
def test_bad_config_names_the_field(field, value):
    config = dataclasses.replace(PickCubeConfig(), **{field: value})
    with pytest.raises(ValueError, match=field.split("_low")[0]):
        config.validate()


def test_a_missing_expert_lifts_an_empty_gripper_beside_the_cube(sim):
    # Failure demonstrations for the reward classifier: what a grasp that missed looks like.
    config = dataclasses.replace(EXPERT_DEFAULTS[sim.config.arm], miss_distance=0.06)
    expert = ScriptedExpert(config)
    for seed in range(3):
        state = sim.reset(seed=seed)
        expert.reset(seed=seed)
        cube_start = state.cube_position.copy()
        highest, closed_high = 0.0, False
        for _ in range(sim.config.max_episode_steps):
            deltas, gripper = expert.act(state.ee_position, state.cube_position, state.gripper_opening)
            result = sim.step(deltas, gripper)
            state = sim.state()
            assert not result.success
            highest = max(highest, state.ee_position[2])
            closed_high |= state.gripper_opening < 0.5 and state.ee_position[2] > cube_start[2] + 0.08
            if result.terminated or result.truncated:
                break
        assert closed_high, f"seed {seed}: the empty gripper never rose closed (highest ee z {highest:.3f})"
        assert state.cube_position[2] < cube_start[2] + 0.01  # the cube stays on the table


def _joint_actuator_forces(sim):
    """``MjData.actuator_force`` of the actuator of each joint of ``joint_names``, found afresh
    from the model: the arm joints' by their joint transmission, the gripper's by name."""
    import mujoco

    m, arm = sim.model, sim.config.description
    ids = []
    for name in arm.arm_joints:
        joint = m.joint(f"arm/{name}").id
        ids += [a for a in range(m.nu) if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
                and m.actuator_trnid[a, 0] == joint]
    ids.append(m.actuator(f"arm/{arm.gripper_actuator}").id)
    assert len(ids) == len(sim.joint_names)
    return sim.data.actuator_force[ids].copy()


def test_joint_efforts_are_the_joint_actuators_forces_and_show_a_held_cube(sim):
    state = sim.reset(seed=3)
    np.testing.assert_array_equal(state.joint_efforts, _joint_actuator_forces(sim))
    _lift_with_expert(sim, seed=3)
    for _ in range(3):  # hold the cube up, gripper still closed
        sim.hold()
    held = sim.state()
    assert sim.is_success()
    np.testing.assert_array_equal(held.joint_efforts, _joint_actuator_forces(sim))
    limits = sim.effort_limits()
    assert limits.shape == (len(sim.joint_names),)
    assert np.all(np.abs(held.joint_efforts) <= limits + 1e-9)
    assert abs(held.joint_efforts[-1]) > 0.5 * limits[-1]  # the gripper squeezes the cube
    # The links' own weight is compensated passively (gravcomp); the cube's is carried by the
    # arm's actuators, and it is gone once the cube is dropped.
    carrying = np.abs(held.joint_efforts[:-1]).max()
    for _ in range(10):
        sim.step(np.zeros(6), 1)  # open: the cube falls
    for _ in range(5):
        sim.hold()
    empty = np.abs(sim.state().joint_efforts[:-1]).max()
    assert carrying > 0.005 and carrying > 5 * empty, (carrying, empty)
