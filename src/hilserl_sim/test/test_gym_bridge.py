"""Gymnasium hosting without ROS: observation split, action scaling, rejection, errors."""

import math

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from hilserl_sim.gym_bridge import GymEnvHost  # noqa: E402

ENV_ID = "InvertedPendulum-v5"  # a gymnasium MuJoCo task: needs nothing beyond mujoco


def test_box_observation_becomes_state_and_joint_names():
    host = GymEnvHost(ENV_ID)
    try:
        frame = host.reset(seed=3)
        assert frame.state.dtype == np.float32 and frame.state.shape == (4,)
        assert host.joint_names == ("state/0", "state/1", "state/2", "state/3")
        assert frame.images == {}
        again = host.reset(seed=3)
        np.testing.assert_array_equal(frame.state, again.state)
        step = host.step(np.zeros(6), 0)
        assert step.reward == 1.0 and not step.rejected
    finally:
        host.close()


def test_dict_observation_with_rendered_pixels_is_split_into_state_and_camera():
    host = GymEnvHost(ENV_ID, {"width": 64, "height": 48}, render_observation=True)
    try:
        assert host.camera_names == ("pixels",)
        frame = host.reset(seed=0)
        assert frame.state.shape == (4,)
        image = frame.images["pixels"]
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.std() > 1.0
        assert host.joint_names[0] == "state/0"
    finally:
        host.close()


def test_command_is_scaled_to_the_action_bounds_and_malformed_is_held():
    host = GymEnvHost(ENV_ID, action_map=[2])  # action <- linear.z
    try:
        low, high = host.env.action_space.low[0], host.env.action_space.high[0]
        np.testing.assert_allclose(host.command_to_action(np.array([0, 0, 1.0, 0, 0, 0]), 0), [high])
        np.testing.assert_allclose(host.command_to_action(np.array([0, 0, -1.0, 0, 0, 0]), 0), [low])
        np.testing.assert_allclose(host.command_to_action(np.array([0, 0, 5.0, 0, 0, 0]), 0), [high])
        host.reset(seed=0)
        frame = host.step(np.array([math.nan] * 6), 0)
        assert frame.rejected
    finally:
        host.close()


@pytest.mark.parametrize(
    ("env_id", "kwargs", "match"),
    [
        ("CartPole-v1", {}, "Box action"),
        ("NoSuchEnv-v0", {}, "gym_env_id"),
        (ENV_ID, {"action_map": [9]}, "gym_action_map"),
        (ENV_ID, {"action_map": [0, 1]}, "gym_action_map"),
    ],
)
def test_unsupported_environments_are_refused_with_a_reason(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GymEnvHost(env_id, **kwargs)


def test_initial_state_is_refused_for_gym():
    host = GymEnvHost(ENV_ID)
    try:
        with pytest.raises(ValueError, match="initial_state"):
            host.reset(seed=0, initial_state=[1.0])
    finally:
        host.close()
