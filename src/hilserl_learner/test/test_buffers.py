"""Replay buffers: boundaries (episode end, truncation, intervention segments), memory, sampling."""

import numpy as np
import pytest
import torch

from hilserl_learner.buffers import DemoOnlineReplay, ReplayBuffer, TransitionSource
from hilserl_policy.config import ObservationSpec
from hilserl_policy.encoders import feature_key

STATE_SPEC = ObservationSpec(state_dim=2, action_dim=1)
IMAGE_SPEC = ObservationSpec(state_dim=2, action_dim=1, camera_names=("front", "wrist"),
                             image_size=8)


def make_obs(spec, value: float):
    """Observation whose every entry encodes ``value`` (so we can read it back)."""
    obs = {"state": np.array([value, -value], np.float32)}
    for i, camera in enumerate(spec.camera_names):
        obs[camera] = np.full((spec.image_size,) * 2 + (3,), int(value) % 200 + i, np.uint8)
    return obs


def run_episodes(buffer_or_replay, spec, episodes, sources=None):
    """episodes: list of (start value, length, end) with end in {"terminated", "truncated"}.

    Observations within an episode count up from the start value; returns the list of
    (obs value, next value, terminated, truncated) that was added, in order.
    """
    added = []
    for k, (start, length, end) in enumerate(episodes):
        for step in range(length):
            value, next_value = start + step, start + step + 1
            last = step == length - 1
            term, trunc = last and end == "terminated", last and end == "truncated"
            source = sources[k][step] if sources else TransitionSource.POLICY
            buffer_or_replay.add(make_obs(spec, value), np.array([value / 100], np.float32),
                                 float(value), make_obs(spec, next_value), term, trunc,
                                 source=source)
            added.append((value, next_value, term, trunc, int(source)))
    return added


def read_all(buffer: ReplayBuffer, spec):
    slots = (buffer.oldest + np.arange(len(buffer))) % buffer.capacity
    batch = buffer.gather(slots)
    rows = []
    for i in range(len(slots)):
        value = float(batch.observations["state"][i, 0])
        next_value = float(batch.next_observations["state"][i, 0])
        for j, camera in enumerate(spec.camera_names):
            assert (batch.observations[camera][i] == int(value) % 200 + j).all()
            assert (batch.next_observations[camera][i] == int(next_value) % 200 + j).all()
        assert batch.rewards[i] == value
        rows.append((value, next_value, bool(batch.terminated[i]), bool(batch.truncated[i]),
                     int(batch.sources[i])))
    return rows


@pytest.mark.parametrize("spec", [STATE_SPEC, IMAGE_SPEC], ids=["state", "images"])
def test_episode_end_and_truncation_boundaries(spec):
    buffer = ReplayBuffer(spec, capacity=100)
    episodes = [(0, 4, "terminated"), (50, 3, "truncated"), (80, 2, "terminated")]
    added = run_episodes(buffer, spec, episodes)
    assert read_all(buffer, spec) == added
    # The next observation of an episode's last step is its own final frame, not the
    # next episode's first frame; a truncation is kept distinct from a termination.
    assert added[3][:4] == (3, 4, True, False) and added[6][:4] == (52, 53, False, True)
    # One frame per step plus one per episode start: frames are stored once.
    assert buffer.num_frames == 9 + 3


@pytest.mark.parametrize("spec", [STATE_SPEC, IMAGE_SPEC], ids=["state", "images"])
def test_intervention_segments_go_to_both_buffers_with_correct_next(spec):
    replay = DemoOnlineReplay(spec, online_capacity=100, demo_capacity=100)
    P, I = TransitionSource.POLICY, TransitionSource.INTERVENTION
    # One episode: policy, policy, [intervention x2], policy, [intervention], policy.
    sources = [[P, P, I, I, P, I, P]]
    added = run_episodes(replay, spec, [(10, 7, "terminated")], sources)
    assert read_all(replay.online, spec) == added
    demo_rows = read_all(replay.demo, spec)
    assert demo_rows == [row for row in added if row[4] == int(I)]
    # Segment end: the second intervention's next observation is step 14's frame (13 -> 14),
    # even though the demo buffer's following transition starts at 15.
    assert [r[:2] for r in demo_rows] == [(12, 13), (13, 14), (15, 16)]


def test_demo_transitions_go_to_demo_only():
    replay = DemoOnlineReplay(STATE_SPEC, 10, 10)
    replay.add(make_obs(STATE_SPEC, 1), np.zeros(1), 0.0, make_obs(STATE_SPEC, 2), False,
               source=TransitionSource.DEMO)
    assert len(replay.demo) == 1 and len(replay.online) == 0


def test_ring_wraparound_keeps_exact_transitions():
    buffer = ReplayBuffer(STATE_SPEC, capacity=10)
    added = run_episodes(buffer, STATE_SPEC, [(0, 7, "terminated"), (100, 9, "truncated")])
    # 11 frame slots: the last 10 transitions span 12 frames (an episode start in
    # between), so the oldest one left with its frame: 9 valid, all exact.
    assert buffer.frame_capacity == 11 and len(buffer) == 9
    assert read_all(buffer, STATE_SPEC) == added[-9:]


def test_short_episodes_evict_transitions_never_corrupt_them():
    # Length-1 episodes need two frames per transition: the frame ring binds first.
    buffer = ReplayBuffer(STATE_SPEC, capacity=10, frame_capacity_factor=1.05)
    added = run_episodes(buffer, STATE_SPEC, [(10 * k, 1, "terminated") for k in range(12)])
    rows = read_all(buffer, STATE_SPEC)
    assert 5 <= len(rows) < 10
    assert rows == added[-len(rows):]


def test_terminated_and_truncated_together_counts_as_terminated():
    buffer = ReplayBuffer(STATE_SPEC, capacity=4)
    buffer.add(make_obs(STATE_SPEC, 0), np.zeros(1), 1.0, make_obs(STATE_SPEC, 1), True, True)
    assert buffer.terminated[0] and not buffer.truncated[0]


def test_no_gripper_action_is_stored_as_stay():
    buffer = ReplayBuffer(STATE_SPEC, capacity=4)  # what RLPDAgent.act returns without a gripper
    buffer.add(make_obs(STATE_SPEC, 0), np.zeros(1), 0.0, make_obs(STATE_SPEC, 1), False, gripper_action=None)
    buffer.add(make_obs(STATE_SPEC, 1), np.zeros(1), 0.0, make_obs(STATE_SPEC, 2), False, gripper_action=0)
    assert buffer.gripper_action[:2].tolist() == [1, 0]


def test_image_buffer_memory_is_within_1_1_of_raw_uint8():
    spec = ObservationSpec(state_dim=21, action_dim=3, camera_names=("front", "wrist"),
                           image_size=128, has_gripper=True)
    buffer = ReplayBuffer(spec, capacity=2000)
    raw = 2000 * 2 * 128 * 128 * 3
    assert buffer.nbytes / raw <= 1.1
    assert buffer.frame_images["front"].dtype == np.uint8


def test_source_weights_and_demo_fraction():
    replay = DemoOnlineReplay(STATE_SPEC, 1000, 1000, demo_fraction=0.25,
                              source_weights=(1.0, 1.0, 2.0))
    P, I, D = TransitionSource.POLICY, TransitionSource.INTERVENTION, TransitionSource.DEMO
    run_episodes(replay, STATE_SPEC, [(0, 200, "truncated"), (1000, 200, "truncated"),
                                      (5000, 200, "truncated")],
                 sources=[[P] * 200, [I] * 200, [D] * 200])
    rng = np.random.default_rng(0)
    batch = replay.sample(4000, rng)
    sources = batch.sources.numpy()
    first = sources[:3000]  # online part: policy 200 (w 1), intervention 200 (w 2)
    assert abs((first == int(I)).mean() - 2 / 3) < 0.03
    second = sources[3000:]  # demo part: demo 200 (w 1), intervention 200 (w 2)
    assert abs((second == int(I)).mean() - 2 / 3) < 0.04
    assert not (first == int(D)).any() and not (second == int(P)).any()


def test_feature_cache_encodes_each_frame_once_and_refuses_stale_reads():
    buffer = ReplayBuffer(IMAGE_SPEC, capacity=50)
    buffer.enable_feature_cache({"front": (2, 1, 1), "wrist": (2, 1, 1)})
    run_episodes(buffer, IMAGE_SPEC, [(0, 5, "terminated")])
    calls = []

    def encode(images):
        calls.append(images["front"].shape[0])
        return {c: images[c][:, :2, 0, 0].float().reshape(-1, 2, 1, 1) for c in images}

    with pytest.raises(RuntimeError, match="stale"):
        buffer.sample(4, np.random.default_rng(0))
    assert buffer.refresh_features(encode) == 6 and calls == [6]
    batch = buffer.sample(8, np.random.default_rng(0))
    assert "front" not in batch.observations
    feats = batch.observations[feature_key("front")]
    assert feats.dtype == torch.float16
    assert torch.equal(feats[:, 0, 0, 0], batch.observations["state"][:, 0].half())
    run_episodes(buffer, IMAGE_SPEC, [(20, 2, "terminated")])
    assert buffer.refresh_features(encode) == 3 and calls == [6, 3]


def test_mixed_batch_equals_each_buffer_gathered_and_concatenated():
    """The demo/online batch gathers observation rows in place; same content and RNG use
    as gathering each half and concatenating."""
    replay = DemoOnlineReplay(IMAGE_SPEC, online_capacity=50, demo_capacity=50)
    run_episodes(replay, IMAGE_SPEC, [(0, 10, "terminated"), (20, 8, "truncated")],
                 sources=[[TransitionSource.DEMO] * 10, [TransitionSource.POLICY] * 8])
    run_episodes(replay, IMAGE_SPEC, [(40, 6, "terminated")])
    batch = replay.sample(12, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    online = replay.online.gather(replay.online.sample_slots(6, rng))
    demo = replay.demo.gather(replay.demo.sample_slots(6, rng))
    for got, parts in zip(batch, zip(online, demo)):
        if isinstance(got, dict):
            assert got.keys() == parts[0].keys()
            for key in got:
                assert torch.equal(got[key], torch.cat([p[key] for p in parts]))
        else:
            assert torch.equal(got, torch.cat(parts))


def test_replay_from_config_and_without_a_demo_buffer():
    from hilserl_learner.config import ReplayConfig

    config = ReplayConfig(online_capacity=50, demo_capacity=30, demo_fraction=0.25,
                          intervention_weight=3.0)
    replay = DemoOnlineReplay.from_config(STATE_SPEC, config)
    assert replay.online.capacity == 50 and replay.demo.capacity == 30
    assert replay.demo_fraction == 0.25 and tuple(replay.online.source_weights) == (1.0, 1.0, 3.0)

    no_demo = DemoOnlineReplay.from_config(STATE_SPEC, ReplayConfig(online_capacity=50, demo_capacity=0))
    assert no_demo.demo is None and set(no_demo.buffers()) == {"online"}
    run_episodes(no_demo, STATE_SPEC, [(0, 4, "terminated"), (10, 3, "truncated")],
                 sources=[[TransitionSource.POLICY] * 4, [TransitionSource.INTERVENTION] * 3])
    assert len(no_demo.online) == 7  # interventions go to the online buffer only
    batch = no_demo.sample(16, np.random.default_rng(0))  # every row online; demo_fraction ignored
    assert batch.actions.shape == (16, 1) and set(batch.sources.tolist()) <= {0, 2}
    with pytest.raises(ValueError, match="demo_capacity is 0"):
        no_demo.add(make_obs(STATE_SPEC, 1), np.zeros(1, np.float32), 0.0, make_obs(STATE_SPEC, 2),
                    False, source=TransitionSource.DEMO)
    with pytest.raises(ValueError, match="demo_capacity"):
        ReplayConfig(demo_capacity=-1)

    # cache_frozen_features sizes a feature cache in both buffers (cameras only).
    spec = ObservationSpec(state_dim=2, action_dim=1, camera_names=("front",), image_size=16)
    cached = ReplayConfig(online_capacity=50, demo_capacity=30, cache_frozen_features=True)
    replay = DemoOnlineReplay.from_config(spec, cached, {"front": (4, 2, 2)})
    assert all(b.frame_features["front"].shape == (b.frame_capacity, 4, 2, 2)
               for b in replay.buffers().values())
    assert not DemoOnlineReplay.from_config(STATE_SPEC, cached).online.frame_features
    with pytest.raises(ValueError, match="feature_shapes"):
        DemoOnlineReplay.from_config(spec, cached)
