"""Demo files: round trip, validation errors that name the file, expert recording."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from hilserl_learner.buffers import DemoOnlineReplay
from hilserl_learner.demo_file import (
    DemoDatasetBuilder,
    DemoFileError,
    read_demo_file,
    write_demo_file,
)
from hilserl_policy.config import ObservationSpec

SPEC = ObservationSpec(state_dim=4, action_dim=3, camera_names=("front",), image_size=8,
                       has_gripper=True)


def make_dataset(episodes=3, steps=5, fail_one=True):
    rng = np.random.default_rng(0)
    builder = DemoDatasetBuilder(SPEC, layout={"name": "relative"}, source="test")

    def obs():
        return {"state": rng.normal(size=4).astype(np.float32),
                "front": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)}

    for episode in range(episodes + (1 if fail_one else 0)):
        current = obs()
        for step in range(steps):
            nxt = obs()
            last = step == steps - 1
            builder.add(current, rng.uniform(-1, 1, 3), int(rng.integers(0, 3)), float(last), nxt,
                        terminated=last, truncated=False, gripper_penalty=-0.02 * (step == 1))
            current = nxt
        if fail_one and episode == 1:
            builder.discard_episode()
        else:
            builder.end_episode(success=True)
    return builder.build()


def test_round_trip(tmp_path):
    data = make_dataset()
    assert data.episodes == 3 and len(data) == 15
    assert data.frames["state"].shape == (18, 4)  # 6 frames per episode, each stored once
    path = write_demo_file(tmp_path / "demos.safetensors", data)
    loaded = read_demo_file(path, expect_spec=SPEC)
    assert loaded.episodes == 3 and loaded.successes == 3 and loaded.layout == {"name": "relative"}
    assert loaded.source == "test"
    for key in data.arrays:
        np.testing.assert_array_equal(loaded.arrays[key], data.arrays[key])
    for key in data.frames:
        np.testing.assert_array_equal(loaded.frames[key], data.frames[key])
    # Within an episode, the next observation of a step is the next step's observation.
    a = loaded.arrays
    assert np.all(a["next_frame"][:4] == a["obs_frame"][1:5])
    assert a["obs_frame"][5] != a["next_frame"][4]  # a new episode starts with its own frame


def test_add_to_replay_fills_the_demo_buffer(tmp_path):
    data = make_dataset()
    replay = DemoOnlineReplay(SPEC, online_capacity=100, demo_capacity=100)
    assert data.add_to(replay) == 15
    assert len(replay.demo) == 15 and len(replay.online) == 0
    assert int(replay.demo.terminated[:15].sum()) == 3
    np.testing.assert_allclose(replay.demo.action[:15], data.arrays["action"])


def test_spec_mismatch_names_the_field(tmp_path):
    path = write_demo_file(tmp_path / "d.safetensors", make_dataset())
    other = ObservationSpec(state_dim=5, action_dim=3, camera_names=("front",), image_size=8,
                            has_gripper=True)
    with pytest.raises(DemoFileError, match=r"d\.safetensors.*state_dim=4 \(learner: 5\)"):
        read_demo_file(path, expect_spec=other)
    # Normalisation is the learner's choice: demos of the same data fit.
    normalised = ObservationSpec(state_dim=4, action_dim=3, camera_names=("front",), image_size=8,
                                 has_gripper=True, state_normalization="running")
    assert len(read_demo_file(path, expect_spec=normalised)) == 15


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DemoFileError, match="nope.safetensors: demo file not found"):
        read_demo_file(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(DemoFileError, match="junk.safetensors: not a readable safetensors"):
        read_demo_file(junk)
    path = write_demo_file(tmp_path / "t.safetensors", make_dataset())
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DemoFileError, match="cut.safetensors"):
        read_demo_file(truncated)


def _edit(path, tmp_path, name, edit_arrays=None, edit_meta=None):
    """Copy of a demo file with arrays or metadata changed."""
    from safetensors.numpy import load, save

    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    metadata = json.loads(blob[8:8 + length])["__metadata__"]
    arrays = load(blob)
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        meta = json.loads(metadata["hilserl_demos"])
        edit_meta(meta)
        metadata["hilserl_demos"] = json.dumps(meta)
    out = tmp_path / name
    out.write_bytes(save(arrays, metadata=metadata))
    return out


@pytest.mark.parametrize("edit,message", [
    (lambda a: a["action"].__setitem__((0, 0), np.nan), "action holds NaN"),
    (lambda a: a["action"].__setitem__((0, 0), 3.0), r"action outside \[-1, 1\]"),
    (lambda a: a["gripper_action"].__setitem__(0, 7), "gripper_action must be 0"),
    (lambda a: a["next_frame"].__setitem__(0, 999), "next_frame indexes frame 999"),
    (lambda a: a.pop("reward"), "missing array 'reward'"),
    (lambda a: a.__setitem__("reward", a["reward"][:-1].copy()), "reward has 14 rows"),
    (lambda a: a.__setitem__("terminated", a["terminated"].astype(np.float32)), "terminated has dtype"),
    (lambda a: a.__setitem__("frames/front", a["frames/front"][:, :4].copy()), "frames/front is uint8"),
    (lambda a: a["truncated"].__setitem__(4, True), "both terminated and truncated"),
    (lambda a: a["gripper_penalty"].__setitem__(0, 0.5), "gripper_penalty must be <= 0"),
])
def test_bad_arrays_are_refused_naming_the_file(tmp_path, edit, message):
    path = write_demo_file(tmp_path / "good.safetensors", make_dataset())
    bad = _edit(path, tmp_path, "bad.safetensors", edit_arrays=edit)
    with pytest.raises(DemoFileError, match=f"bad.safetensors: .*{message}"):
        read_demo_file(bad)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(format_version=2), "format_version 2"),
    (lambda m: m.update(episodes=5), "metadata says 5 episodes"),
    (lambda m: m.update(transitions=3), "metadata says 3 transitions"),
    (lambda m: m.update(successes=9), "successes 9"),
    (lambda m: m.pop("spec"), "bad metadata"),
])
def test_bad_metadata_is_refused(tmp_path, edit, message):
    path = write_demo_file(tmp_path / "good.safetensors", make_dataset())
    bad = _edit(path, tmp_path, "meta.safetensors", edit_meta=edit)
    with pytest.raises(DemoFileError, match=f"meta.safetensors: .*{message}"):
        read_demo_file(bad)


def test_builder_refuses_an_unfinished_episode():
    builder = DemoDatasetBuilder(SPEC)
    rng = np.random.default_rng(0)
    o = {"state": np.zeros(4, np.float32), "front": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)}
    builder.add(o, np.zeros(3), 1, 0.0, o, False, False)
    with pytest.raises(ValueError, match="neither ended nor discarded"):
        builder.build()


def test_record_expert_demos(tmp_path, capsys):
    from hilserl_learner.record_expert_demos import main

    out = tmp_path / "expert.safetensors"
    assert main(["--out", str(out), "--episodes", "2", "--seed", "5"]) == 0
    err = capsys.readouterr().err
    assert "episode 2/2: success" in err
    data = read_demo_file(out)
    assert data.episodes == 2 and data.successes == 2
    assert data.spec.state_dim == 10 and data.spec.action_dim == 3 and data.spec.has_gripper
    assert data.layout["name"] == "relative"
    a = data.arrays
    # Each episode ends in a success: reward 1 and terminated on its last step only.
    assert a["reward"].sum() == 2.0 and a["terminated"].sum() == 2
    ends = np.flatnonzero(np.diff(a["episode"])).tolist() + [len(data) - 1]
    assert a["terminated"][ends].all()
    # The relative layout: the last 3 entries are 10 * (cube - end effector).
    state = data.frames["state"]
    np.testing.assert_allclose(state[:, 7:], 10.0 * (state[:, 4:7] - state[:, 1:4]), atol=1e-5)
    # The expert closes the gripper once per episode: one change penalty each.
    assert a["gripper_penalty"].sum() == pytest.approx(-0.04)
    assert np.abs(a["action"]).max() <= 1.0


def test_record_expert_demos_with_cameras(tmp_path):
    from hilserl_learner.record_expert_demos import collect_expert_demos

    data = collect_expert_demos(1, cameras=("front", "wrist"), image_size=32, seed=3)
    assert data.spec.camera_names == ("front", "wrist") and data.spec.image_size == 32
    frames = data.frames["front"]
    assert frames.shape == (len(data) + 1, 32, 32, 3) and frames.dtype == np.uint8
    assert frames.std() > 5, "rendered images, not blank ones"
    assert not np.array_equal(data.frames["wrist"][0], data.frames["wrist"][-1]), "the wrist camera moves"
    with pytest.raises(ValueError, match="camera 'top' is not in the panda scene"):
        collect_expert_demos(1, cameras=("top",))
