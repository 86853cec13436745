"""Observation layouts (dims, names, values against hand-computed ones) and state normalisation."""

import numpy as np
import pytest
import torch

from hilserl_policy.config import ObservationSpec
from hilserl_policy.encoders import ObservationEncoder, StateNormalizer
from hilserl_policy.config import EncoderConfig
from hilserl_policy.observation import LAYOUT_NAMES, ObservationLayout, build_state

Q = np.arange(8) * 0.1  # 7 arm joints + the gripper joint (ignored)
QD = -np.arange(8) * 0.01
EE = np.array([0.5, 0.0, 0.2])
CUBE = np.array([0.52, -0.03, 0.02])


def quantities():
    return dict(gripper_opening=0.75, ee_position=EE, cube_position=CUBE,
                joint_positions=Q, joint_velocities=QD)


def test_relative_layout_is_ten_values_in_the_documented_order():
    layout = ObservationLayout("relative")
    assert layout.dim == 10
    assert layout.names == ("gripper", "ee_x", "ee_y", "ee_z", "cube_x", "cube_y", "cube_z",
                            "rel_x", "rel_y", "rel_z")
    state = layout.build(**quantities())
    assert state.dtype == np.float32 and state.shape == (10,)
    expected = [0.75, 0.5, 0.0, 0.2, 0.52, -0.03, 0.02, 0.2, -0.3, -1.8]  # 10 * (cube - ee)
    np.testing.assert_allclose(state, expected, atol=1e-6)
    # Joints are not needed by "relative".
    np.testing.assert_array_equal(
        build_state("relative", gripper_opening=0.75, ee_position=EE, cube_position=CUBE), state)


def test_raw_and_raw_plus_relative_layouts():
    raw = ObservationLayout("raw").build(**quantities())
    assert raw.shape == (21,) and ObservationLayout("raw").dim == 21
    np.testing.assert_allclose(raw[:7], Q[:7], atol=1e-7)
    np.testing.assert_allclose(raw[7:14], QD[:7], atol=1e-7)
    np.testing.assert_allclose(raw[14:], [0.75, *EE, *CUBE], atol=1e-7)
    both = ObservationLayout("raw+relative")
    assert both.dim == 24 and both.names[-3:] == ("rel_x", "rel_y", "rel_z")
    np.testing.assert_allclose(both.build(**quantities())[-3:], 10 * (CUBE - EE), atol=1e-6)
    six = ObservationLayout("raw", num_joints=5)
    assert six.dim == 5 + 5 + 7 and six.names[4] == "joint4_pos"


def test_proprio_layout_leaves_the_cube_to_the_cameras():
    layout = ObservationLayout("proprio")
    assert layout.dim == 4 and layout.names == ("gripper", "ee_x", "ee_y", "ee_z")
    np.testing.assert_allclose(layout.build(**quantities()), [0.75, *EE], atol=1e-7)
    # No cube needed; one given is ignored.
    np.testing.assert_array_equal(layout.build(gripper_opening=0.75, ee_position=EE),
                                  layout.build(**quantities()))
    low, high = layout.bounds([0.3, -0.2, 0.0], [0.7, 0.2, 0.4])
    assert low == (0.0, 0.3, -0.2, 0.0) and high == (1.0, 0.7, 0.2, 0.4)
    with pytest.raises(ValueError, match="cube_position is required"):
        ObservationLayout("relative").build(gripper_opening=0.75, ee_position=EE)


def test_layout_errors_name_the_input():
    with pytest.raises(ValueError, match="name"):
        ObservationLayout("absolute")
    with pytest.raises(ValueError, match="joint_positions is required"):
        ObservationLayout("raw").build(gripper_opening=1.0, ee_position=EE, cube_position=CUBE)
    with pytest.raises(ValueError, match="ee_position must have 3"):
        ObservationLayout().build(gripper_opening=1.0, ee_position=EE[:2], cube_position=CUBE)
    with pytest.raises(ValueError, match="cube_position must be finite"):
        ObservationLayout().build(gripper_opening=1.0, ee_position=EE, cube_position=[0, np.nan, 0])
    with pytest.raises(ValueError, match="at least 7"):
        ObservationLayout("raw").build(**{**quantities(), "joint_velocities": QD[:3]})


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_bounds_cover_the_workspace(name):
    layout = ObservationLayout(name)
    low, high = layout.bounds((0.3, -0.3, 0.015), (0.7, 0.3, 0.4), -np.ones(7) * 2, np.ones(7) * 2)
    assert len(low) == len(high) == layout.dim
    state = layout.build(**quantities())
    assert np.all(state >= np.array(low)) and np.all(state <= np.array(high))
    assert low[layout.names.index("gripper")] == 0.0 and high[layout.names.index("gripper")] == 1.0


def test_spec_validates_normalisation_fields():
    with pytest.raises(ValueError, match="state_normalization"):
        ObservationSpec(state_dim=2, state_normalization="minmax")
    with pytest.raises(ValueError, match="state_low"):
        ObservationSpec(state_dim=2, state_normalization="bounds", state_low=(0.0,), state_high=(1.0, 1.0))
    with pytest.raises(ValueError, match="state_high"):
        ObservationSpec(state_dim=2, state_normalization="bounds", state_low=(0.0, 0.0),
                        state_high=(1.0, 0.0))
    with pytest.raises(ValueError, match="only used"):
        ObservationSpec(state_dim=2, state_low=(0.0, 0.0), state_high=(1.0, 1.0))


def test_bounds_normalisation_maps_the_box_onto_minus_one_one():
    spec = ObservationSpec(state_dim=3, state_normalization="bounds", state_low=(0.0, -2.0, 10.0),
                           state_high=(1.0, 2.0, 20.0), normalization_clip=3.0)
    norm = StateNormalizer(spec)
    x = torch.tensor([[0.0, -2.0, 10.0], [1.0, 2.0, 20.0], [0.5, 0.0, 15.0], [3.0, 0.0, 100.0]])
    torch.testing.assert_close(norm(x), torch.tensor(
        [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 3.0]]))  # last row clipped


def test_running_normalisation_matches_numpy_statistics():
    spec = ObservationSpec(state_dim=2, state_normalization="running")
    norm = StateNormalizer(spec)
    x = torch.tensor([[1.0, 5.0]])
    torch.testing.assert_close(norm(x), x)  # identity until two states were seen
    data = np.random.default_rng(0).normal([3.0, -1.0], [2.0, 0.001], size=(500, 2))
    norm.update(data[:1])
    for chunk in np.array_split(data[1:], 7):  # merged in uneven batches
        norm.update(chunk)
    assert float(norm.count) == 500
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-9)
    std = data.std(0, ddof=1)
    expected_scale = 1 / np.maximum(std, StateNormalizer.MIN_STD)  # tiny std is floored
    np.testing.assert_allclose(norm.scale.numpy(), expected_scale, rtol=1e-5)
    out = norm(torch.from_numpy(data).float())
    assert abs(float(out[:, 0].mean())) < 1e-4 and abs(float(out[:, 0].std()) - 1.0) < 1e-3


def test_encoder_applies_normalisation_and_keeps_it_in_its_state_dict():
    spec = ObservationSpec(state_dim=2, state_normalization="running")
    encoder = ObservationEncoder(spec, EncoderConfig())
    encoder.state_normalizer.update(np.array([[0.0, 0.0], [2.0, 4.0]]))
    out = encoder({"state": torch.tensor([[1.0, 2.0], [2.0, 4.0]])})
    # mean (1, 2), std (1.414, 2.828)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.7071, 0.7071]]), atol=1e-4, rtol=0)
    keys = set(encoder.state_dict())
    assert {"state_normalizer.mean", "state_normalizer.scale", "state_normalizer.count"} <= keys
    plain = ObservationEncoder(ObservationSpec(state_dim=2), EncoderConfig())
    assert plain.state_normalizer is None and not plain.state_dict()  # "none": nothing stored
