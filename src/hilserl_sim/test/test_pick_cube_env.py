"""Gymnasium pick-cube env: spaces, gripper mapping and penalty, termination vs truncation."""

import gymnasium
import numpy as np
import pytest

from hilserl_drivers.ee_control import GRIPPER_CLOSE, GRIPPER_OPEN
from hilserl_sim.expert import EXPERT_DEFAULTS, ScriptedExpert
from hilserl_sim.pick_cube import PickCubeConfig
from hilserl_sim.pick_cube_env import ENV_ID, PickCubeEnv, register_pick_cube_env

CLOSE, STAY, OPEN = 0, 1, 2  # grasp-critic indices


@pytest.fixture(scope="module")
def env():
    environment = PickCubeEnv(PickCubeConfig(max_episode_steps=60))
    yield environment
    environment.close()


def test_spaces_and_observation_match_the_layout(env):
    assert env.action_space["deltas"].shape == (3,) and env.action_space["gripper"].n == 3
    assert env.observation_space["state"].shape == (10,)
    obs, info = env.reset(seed=4)
    assert obs["state"].dtype == np.float32 and env.observation_space.contains(obs)
    state = info["sim_state"]
    np.testing.assert_allclose(obs["state"][1:4], state.ee_position, atol=1e-6)
    np.testing.assert_allclose(obs["state"][7:], 10 * (state.cube_position - state.ee_position), atol=1e-5)
    raw = PickCubeEnv(layout="raw")
    assert raw.reset(seed=4)[0]["state"].shape == (21,)
    spec = env.observation_spec("bounds")
    assert spec.state_dim == 10 and spec.action_dim == 3 and spec.has_gripper
    assert len(spec.state_low) == 10 and all(h > lo for lo, h in zip(spec.state_low, spec.state_high))


def test_camera_observations_beside_a_proprio_state():
    config = PickCubeConfig(max_episode_steps=20, image_width=48, image_height=48)
    env = PickCubeEnv(config, layout="proprio", cameras=("front", "wrist"))
    try:
        obs, info = env.reset(seed=3)
        assert set(obs) == {"state", "front", "wrist"} and env.observation_space.contains(obs)
        assert obs["front"].shape == (48, 48, 3) and obs["front"].dtype == np.uint8
        np.testing.assert_allclose(obs["state"], [info["sim_state"].gripper_opening,
                                                  *info["sim_state"].ee_position], atol=1e-6)
        assert not np.array_equal(obs["front"], obs["wrist"])  # two viewpoints
        other = env.reset(seed=4)[0]  # another cube position: another front image
        assert np.abs(other["front"].astype(int) - obs["front"].astype(int)).sum() > 0
        np.testing.assert_array_equal(env.reset(seed=3)[0]["front"], obs["front"])
        moved = env.step({"deltas": np.array([1.0, 0.0, 0.0]), "gripper": 1})[0]
        assert not np.array_equal(moved["wrist"], obs["wrist"])  # the wrist camera moved
        spec = env.observation_spec()
        assert spec.camera_names == ("front", "wrist") and spec.image_size == 48 and spec.state_dim == 4
    finally:
        env.close()
    with pytest.raises(ValueError, match=r"cameras \['top'\] not in this scene"):
        PickCubeEnv(layout="proprio", cameras=("top",))
    with pytest.raises(ValueError, match="square"):
        PickCubeEnv(PickCubeConfig(image_width=64, image_height=48), cameras=("front",))


def test_reset_is_deterministic_for_a_seed(env):
    first = env.reset(seed=11)[0]["state"]
    other = env.reset(seed=12)[0]["state"]
    again = env.reset(seed=11)[0]["state"]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[4:6], other[4:6])  # the cube moved


def test_gripper_index_maps_to_the_scene_command_with_the_change_penalty(env):
    env.reset(seed=1)
    zero = np.zeros(3)
    _, _, _, _, info = env.step({"deltas": zero, "gripper": STAY})
    assert info["gripper_penalty"] == 0.0 and env.sim.gripper_command == GRIPPER_OPEN
    _, _, _, _, info = env.step({"deltas": zero, "gripper": CLOSE})
    assert info["gripper_penalty"] == pytest.approx(-0.02) and info["gripper_closed"]
    assert env.sim.gripper_command == GRIPPER_CLOSE
    _, _, _, _, info = env.step((zero, CLOSE))  # already closed: no change, no penalty
    assert info["gripper_penalty"] == 0.0
    _, _, _, _, info = env.step({"deltas": zero, "gripper": OPEN})
    assert info["gripper_penalty"] == pytest.approx(-0.02) and not info["gripper_closed"]


def test_deltas_move_the_end_effector_in_xyz_only(env):
    env.reset(seed=2)
    start = env.sim_state.ee_position.copy()
    for _ in range(3):
        env.step({"deltas": np.array([1.0, 0.0, 0.0]), "gripper": STAY})
    moved = env.sim_state.ee_position - start
    assert 0.035 < moved[0] <= 3 * 0.025 + 0.005  # at most 2.5 cm per full step (servo lag)
    assert abs(moved[1]) < 0.01 and abs(moved[2]) < 0.01


def test_time_out_truncates_and_success_terminates(env):
    env.reset(seed=3)
    for step in range(60):
        _, reward, terminated, truncated, info = env.step({"deltas": np.zeros(3), "gripper": STAY})
        assert not terminated and reward == 0.0
        assert truncated == (step == 59)
    expert = ScriptedExpert(EXPERT_DEFAULTS["panda"])
    obs, info = env.reset(seed=3)
    for step in range(60):
        state = info["sim_state"]
        deltas, command = expert.act(state.ee_position, state.cube_position, state.gripper_opening)
        _, reward, terminated, truncated, info = env.step(
            {"deltas": deltas[:3], "gripper": command + 1})
        if terminated:
            break
    assert terminated and not truncated and reward == 1.0 and info["success"]


def test_bad_actions_are_refused_with_a_clear_error(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="deltas' must have 3"):
        env.step({"deltas": np.zeros(6), "gripper": STAY})
    with pytest.raises(ValueError, match="gripper' must be 0"):
        env.step({"deltas": np.zeros(3), "gripper": -1})
    with pytest.raises(ValueError, match="missing"):
        env.step({"deltas": np.zeros(3)})
    with pytest.raises(ValueError, match="layout.num_joints"):
        PickCubeEnv(PickCubeConfig(arm="so101"), layout=PickCubeEnv().layout.__class__("raw"))


def test_gymnasium_registration():
    assert register_pick_cube_env() == ENV_ID
    made = gymnasium.make(ENV_ID, layout="raw+relative", disable_env_checker=True)
    assert made.observation_space["state"].shape == (24,)
    made.close()


@pytest.mark.parametrize("arm", ["panda", "so101"])
def test_dynamics_state_equals_the_one_the_actor_builds_from_the_bridge_messages(arm):
    """Same seed and commands in the in-process env and the bridge's environment: the env's
    state equals what the actor builds from the bridge's joint_states / ee_pose / task_state
    messages (made by the bridge node's own functions), for every layout with dynamics."""
    pytest.importorskip("rclpy")
    pytest.importorskip("hilserl_msgs")
    from builtin_interfaces.msg import Time

    from hilserl_policy.networks import gripper_index_to_command
    from hilserl_policy.observation import LAYOUT_NAMES, GripperCalibration, ObservationLayout, state_from_messages
    from hilserl_sim.frame import PickCubeBridge
    from hilserl_sim.pick_cube_env import state_vector
    from hilserl_sim.sim_bridge_node import joint_state_message, pose_message

    config = PickCubeConfig(arm=arm, max_episode_steps=60)
    env = PickCubeEnv(config, dynamics=True)
    bridge = PickCubeBridge(config, cameras=())
    try:
        n = len(config.description.arm_joints)
        assert env.layout == ObservationLayout("relative", num_joints=n, dynamics=True)
        assert env.observation_space["state"].shape == (10 + 2 * (n + 1),)
        description = config.description
        gripper = GripperCalibration(description.gripper_joint, description.gripper_joint_closed,
                                     description.gripper_joint_open)
        layouts = [ObservationLayout(name, num_joints=n, dynamics=True) for name in LAYOUT_NAMES]
        expert = ScriptedExpert(EXPERT_DEFAULTS[arm])
        expert.reset(7)
        obs, info = env.reset(seed=7)
        frame = bridge.reset(seed=7)
        closed_frames = 0
        for _ in range(40):
            joints = joint_state_message(frame, Time())
            ee = pose_message(frame.ee_position, frame.ee_quaternion, Time(), "base")
            task = pose_message(frame.object_position, frame.object_quaternion, Time(), "base")
            np.testing.assert_array_equal(obs["state"], state_from_messages(env.layout, gripper, joints, ee, task))
            for layout in layouts:
                np.testing.assert_array_equal(state_vector(layout, info["sim_state"]),
                                              state_from_messages(layout, gripper, joints, ee, task))
            closed_frames += info["sim_state"].gripper_opening < 0.5
            state = info["sim_state"]
            deltas, command = expert.act(state.ee_position, state.cube_position, state.gripper_opening)
            index = command + 1  # scene command -1/0/1 -> grasp-critic index 0/1/2
            obs, _, terminated, _, info = env.step({"deltas": deltas[:3], "gripper": index})
            frame = bridge.step(np.concatenate([deltas[:3], np.zeros(3)]), gripper_index_to_command(index))
            if terminated:
                break
        assert closed_frames > 0  # the comparison covered frames with the cube gripped
        efforts = obs["state"][-(n + 1):]
        assert abs(efforts[-1]) > 0.5 * env.sim.effort_limits()[-1]  # gripper effort while holding
        low, high = env.state_bounds()
        assert len(low) == env.layout.dim and high[-1] == env.sim.effort_limits()[-1]
    finally:
        env.close()
        bridge.close()
