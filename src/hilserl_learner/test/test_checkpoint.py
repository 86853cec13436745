"""Checkpoints: bit-exact resume, atomicity under a crash mid-save, corruption refused."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from hilserl_learner import checkpoint as ckpt
from hilserl_learner.buffers import DemoOnlineReplay, TransitionSource
from hilserl_learner.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from hilserl_learner.config import LearnerConfig, RLPDConfig
from hilserl_learner.rlpd import RLPDAgent
from hilserl_policy.config import (
    ActorConfig,
    CriticConfig,
    EncoderConfig,
    GraspCriticConfig,
    NetworkConfig,
    ObservationSpec,
)


def make_config(cameras=()):
    spec = ObservationSpec(state_dim=3, action_dim=2, camera_names=cameras, image_size=16,
                           has_gripper=True)
    nets = NetworkConfig(
        encoder=EncoderConfig(small_cnn_channels=(4, 4), image_latent_dim=8, state_latent_dim=4),
        actor=ActorConfig(hidden_dims=(16, 16)),
        critic=CriticConfig(hidden_dims=(16, 16), num_critics=4, target_subset_size=2),
        grasp_critic=GraspCriticConfig(hidden_dims=(16,)))
    return LearnerConfig(spec=spec, networks=nets, rlpd=RLPDConfig(batch_size=16, seed=3))


def make_learner(cameras=()):
    config = make_config(cameras)
    agent = RLPDAgent(config)
    replay = DemoOnlineReplay(config.spec, 64, 64)
    rng = np.random.default_rng(1)
    for step in range(40):
        obs = {"state": rng.standard_normal(3).astype(np.float32)}
        nxt = {"state": rng.standard_normal(3).astype(np.float32)}
        for camera in cameras:
            obs[camera] = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            nxt[camera] = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        source = TransitionSource.INTERVENTION if step % 5 == 0 else TransitionSource.POLICY
        replay.add(obs, rng.uniform(-1, 1, 2), float(step % 3), nxt, step % 7 == 6,
                   step % 11 == 10, source=source, gripper_action=step % 3, gripper_penalty=-0.02)
    return agent, replay


def train(agent, replay, steps):
    metrics = []
    for _ in range(steps):
        batch = replay.sample(agent.config.rlpd.batch_size, agent.rng)
        metrics.append({k: v.item() for k, v in agent.update(batch).items()})
    return metrics


def all_params(agent):
    return {f"{m}/{k}": v.clone() for m, mod in agent.modules().items()
            for k, v in mod.state_dict().items()}


@pytest.mark.parametrize("cameras", [(), ("front",)], ids=["state", "images"])
def test_resumed_learner_makes_bit_identical_updates(tmp_path, cameras):
    agent, replay = make_learner(cameras)
    train(agent, replay, 5)
    folder = save_checkpoint(tmp_path, agent, replay, counters={"env_steps": 40})
    expected = train(agent, replay, 3)  # the learner that never stopped

    resumed, resumed_replay = make_learner(cameras)
    torch.manual_seed(999)  # disturb every RNG: the checkpoint must restore them
    resumed.rng = np.random.default_rng(999)
    counters = load_checkpoint(folder, resumed, resumed_replay)
    assert counters == {"env_steps": 40}
    assert resumed.num_critic_updates == 5 and resumed.num_actor_updates == 2
    got = train(resumed, resumed_replay, 3)
    assert got == expected
    reference, restored = all_params(agent), all_params(resumed)
    assert all(torch.equal(reference[k], restored[k]) for k in reference)
    assert torch.equal(agent.log_alpha, resumed.log_alpha)
    saved_config = LearnerConfig.load_json(folder / "config.json")
    assert saved_config == agent.config


def test_files_are_safetensors_and_json_only(tmp_path):
    agent, replay = make_learner()
    folder = save_checkpoint(tmp_path, agent, replay)
    names = sorted(p.name for p in folder.iterdir())
    assert all(n.endswith((".json", ".safetensors")) for n in names)
    from safetensors.numpy import load_file  # the reference reader accepts our writer's files
    buffer = load_file(str(folder / "buffer_online.safetensors"))
    assert np.array_equal(buffer["reward"], replay.online.reward[:replay.online.num_added])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == set(names) - {"manifest.json"}


def corrupt_and_expect(folder, name, mutate, pattern):
    mutate(folder / name)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(folder, *make_learner())
    assert time.perf_counter() - start < 1.0
    assert name in str(info.value)


def test_truncated_file_is_refused_naming_it(tmp_path):
    agent, replay = make_learner()
    folder = save_checkpoint(tmp_path, agent, replay)

    def truncate(path):
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size - 10)

    corrupt_and_expect(folder, "buffer_online.safetensors", truncate, "truncated")


def test_bit_flip_is_refused_naming_the_file(tmp_path):
    agent, replay = make_learner()
    folder = save_checkpoint(tmp_path, agent, replay)

    def flip(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(data))

    corrupt_and_expect(folder, "networks.safetensors", flip, "sha256 mismatch")


def test_missing_manifest_and_mismatched_config_are_refused(tmp_path):
    agent, replay = make_learner()
    folder = save_checkpoint(tmp_path, agent, replay)
    other = RLPDAgent(make_config(cameras=("front",)))
    with pytest.raises(CheckpointError, match=r"config.json.*spec.camera_names: checkpoint \(\), learner \('front',\)"):
        load_checkpoint(folder, other, None)
    (folder / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="manifest.json: missing"):
        load_checkpoint(folder, agent, replay)


def test_failure_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    agent, replay = make_learner()
    first = save_checkpoint(tmp_path, agent, replay)
    train(agent, replay, 2)
    real_writer = ckpt.write_safetensors

    def failing_writer(path, arrays):
        if path.name.startswith("buffer_"):
            real_writer(path, arrays)
            raise OSError("disk full (simulated)")
        return real_writer(path, arrays)

    monkeypatch.setattr(ckpt, "write_safetensors", failing_writer)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, agent, replay)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [first.name]
    load_checkpoint(first, *make_learner())  # complete and verified
    second = save_checkpoint(tmp_path, agent, replay)
    assert latest_checkpoint(tmp_path) == second
    assert not list(tmp_path.glob(".tmp-*"))  # the interrupted save's leftovers are gone


def test_process_killed_mid_save_leaves_previous_checkpoint_loadable(tmp_path):
    marker = tmp_path / "writing"
    child = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = {sys.path!r}
        from test_checkpoint import make_learner, train
        from hilserl_learner import checkpoint as ckpt
        agent, replay = make_learner()
        ckpt.save_checkpoint({str(tmp_path / "ckpts")!r}, agent, replay)
        train(agent, replay, 2)
        real = ckpt.write_safetensors
        def slow(path, arrays):
            info = real(path, arrays)
            if path.name.startswith("buffer_"):
                open({str(marker)!r}, "w").close()
                time.sleep(60)
            return info
        ckpt.write_safetensors = slow
        ckpt.save_checkpoint({str(tmp_path / "ckpts")!r}, agent, replay)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "child exited before reaching the save"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    root = tmp_path / "ckpts"
    assert list(root.glob(".tmp-*"))  # the killed save left a partial folder...
    latest = latest_checkpoint(root)
    assert latest.name == "step_0000000000"  # ...which is never taken for a checkpoint
    agent, replay = make_learner()
    load_checkpoint(latest, agent, replay)
    assert len(replay.online) > 0


def test_keep_last_prunes_only_after_a_complete_save(tmp_path):
    agent, replay = make_learner()
    folders = []
    for _ in range(3):
        train(agent, replay, 1)
        folders.append(save_checkpoint(tmp_path, agent, replay, keep_last=2))
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [f.name for f in folders[1:]]
    # Saving the same step again writes a new revision folder; the older one is pruned.
    again = save_checkpoint(tmp_path, agent, replay, keep_last=2)
    assert again.name == folders[-1].name + ".1" and latest_checkpoint(tmp_path) == again
    assert sorted(p.name for p in tmp_path.glob("step_*")) == [folders[-1].name, again.name]


PROTOCOL = (("os", "rename"), ("os", "replace"), ("ckpt", "_fsync_dir"), ("shutil", "rmtree"))


def _crash_at(index: int, counter: list) -> None:
    """In a forked child: SIGKILL ourselves just before the index-th file-system step of a save."""
    for owner_name, attr in PROTOCOL:
        owner = {"os": ckpt.os, "ckpt": ckpt, "shutil": ckpt.shutil}[owner_name]
        real = getattr(owner, attr)

        def wrapped(*args, _real=real, **kwargs):
            if len(counter) == index:
                os.kill(os.getpid(), signal.SIGKILL)
            counter.append(1)
            return _real(*args, **kwargs)
        setattr(owner, attr, wrapped)


def _save_in_child(root, agent, replay, crash_index: int) -> bool:
    """fork; the child saves and is killed before its crash_index-th step; True if it was."""
    pid = os.fork()
    if pid == 0:  # child
        _crash_at(crash_index, [])
        save_checkpoint(root, agent, replay, keep_last=2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    return False


@pytest.mark.parametrize("same_step", [False, True], ids=["new_step", "same_step_again"])
def test_kill_9_at_every_step_of_the_save_protocol_keeps_a_loadable_latest(tmp_path, same_step):
    """R7, injected at each rename, replace, directory fsync and removal, not at random times."""
    torch.set_num_threads(1)
    agent, replay = make_learner()
    train(agent, replay, 1)
    index = 0
    while True:  # until the save gets through: every step of its protocol was a crash point
        root = tmp_path / f"crash_{index}"
        save_checkpoint(root, agent, replay, keep_last=2)
        save_checkpoint(root, agent, replay, keep_last=2)  # two on disk, so the save also prunes
        before = latest_checkpoint(root)
        if not same_step:
            train(agent, replay, 1)
        crashed = _save_in_child(root, agent, replay, crash_index=index)
        latest = latest_checkpoint(root)
        assert latest is not None and latest.parent == root, f"crash at step {index}: no checkpoint"
        fresh, fresh_replay = make_learner()
        load_checkpoint(latest, fresh, fresh_replay)  # verifies every digest
        assert ckpt._order(latest) >= ckpt._order(before)  # the previous one or the new one, complete
        # the next complete save cleans every leftover of the killed one
        save_checkpoint(root, agent, replay, keep_last=2)
        names = sorted(p.name for p in root.iterdir())
        assert not [n for n in names if n.startswith((".tmp-", ".old-"))], names
        assert len([n for n in names if n.startswith("step_")]) <= 2, names
        if not crashed:
            break
        index += 1
    print(f"kill -9 before each of the {index} file-system steps of a save "
          f"({'same step saved again' if same_step else 'new step'}): latest loadable after each")
    assert index >= 5


def test_latest_pointer_outside_the_root_is_refused_naming_it(tmp_path):
    agent, replay = make_learner()
    save_checkpoint(tmp_path / "a", agent, replay)
    (tmp_path / "a" / "LATEST").write_text(json.dumps({"checkpoint": "../b/step_0000000000"}))
    with pytest.raises(CheckpointError, match="LATEST.*not a checkpoint folder name"):
        latest_checkpoint(tmp_path / "a")
    (tmp_path / "a" / "LATEST").write_text(json.dumps({"checkpoint": "step_0000000007"}))  # gone
    assert latest_checkpoint(tmp_path / "a").name == "step_0000000000"
