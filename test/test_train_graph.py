"""The training graph end to end, as real processes over real DDS: bridge (lock-step),
simulated human, intervention mux, safety limiter, learner and policy actor.

- a short training run through the runner: contiguous sequences stored once each, the
  actor's weights change, a checkpoint is written and the final evaluation finishes;
- R5: the learner is killed with SIGKILL mid-run and restarted; the actor is never
  restarted; nothing it sent is lost or stored twice, and the learner resumes from its
  checkpoint;
- R6: the actor is killed with SIGKILL and a new one started; the learner never hangs and
  the new actor gets the current weights at once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hilserl_testing import Output, isolated_environment, run_composition, wait_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "launch"))

import hilserl_composition as hc  # noqa: E402
from runner import find_executable  # noqa: E402

from hilserl_learner.checkpoint import latest_checkpoint, read_json, verify_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "demos.safetensors"
    subprocess.run([sys.executable, "-m", "hilserl_learner.record_expert_demos", "--out", str(path),
                    "--episodes", "3", "--layout", "relative"], check=True, capture_output=True, timeout=120)
    return path


def overrides(tmp_path: Path, demo_file: Path, **actor) -> Path:
    """A parameter file making the train composition small and fast, writing under tmp_path."""
    params = {
        "actor": {"ros__parameters": {"max_episode_steps": 40, "results_dir": str(tmp_path / "results"),
                                      "eval_episodes": 2, **actor}},
        "learner": {"ros__parameters": {"demo_file": str(demo_file), "checkpoint_dir": str(tmp_path / "ckpt"),
                                        "tensorboard_dir": "", "batch_size": 32, "hidden_dims": [32, 32],
                                        "learning_starts": 20, "publish_every_updates": 10,
                                        "checkpoint_period_s": 3.0, "report_period_s": 1.0}},
    }
    path = tmp_path / "overrides.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def stored_frontiers(checkpoint_root: Path) -> tuple[dict[str, int], int]:
    """(stored frontier per actor stream, online buffer size) of the newest checkpoint."""
    folder = latest_checkpoint(checkpoint_root)
    verify_checkpoint(folder)
    state = read_json(folder / "state.json")
    frontiers = {k[len("stored/"):]: v for k, v in state["counters"].items() if k.startswith("stored/")}
    return frontiers, int(state["buffers"]["online"]["num_added"])  # far below capacity here


def test_short_training_run_through_the_runner(tmp_path, demo_file, ros_domain_id):
    params = overrides(tmp_path, demo_file, max_env_steps=200, eval_every_steps=100)
    out = run_composition(ros_domain_id, params, "train")
    curve = json.loads((tmp_path / "results" / "curve.json").read_text())["curve"]
    print("curve:", curve)
    assert [p["env_steps"] >= 100 for p in curve] == [True, True] and curve[-1]["env_steps"] >= 200
    assert all(p["episodes"] == 2 for p in curve)
    assert (tmp_path / "results" / "curve.png").stat().st_size > 1000
    first = out.find(r"\[actor\] .*weights version (\d+) received")
    assert first, out.tail()
    # the final evaluation ran on newer weights than the actor started with
    assert curve[-1]["policy_version"] > int(first[0].group(1)), "the actor's weights never changed"
    frontiers, online = stored_frontiers(tmp_path / "ckpt")  # the learner saved on exit
    (stream, frontier), = frontiers.items()
    sent = curve[-1]["env_steps"]
    print(f"stream {stream}: stored 0..{frontier}, online buffer {online}, actor env steps {sent}")
    assert frontier == sent - 1  # contiguous: every transition sent is stored
    assert online == sent  # and each once

    # the eval composition serves that checkpoint and evaluates it, writing nothing into the run
    # (trained with 32x32 networks: the evaluating learner takes them from the checkpoint's
    # config.json, not from learner.yaml's 256x256)
    before = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    evaluation = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "runner.py"), "eval", f"domain_id:={ros_domain_id}",
         f"checkpoint_dir:={tmp_path / 'ckpt'}", "episodes:=2", f"results_dir:={tmp_path / 'eval'}"],
        env=isolated_environment(ros_domain_id), capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stdout[-3000:]
    assert "resumed from" in evaluation.stdout
    assert "observation spec and networks from its config.json" in evaluation.stdout
    evaluated = json.loads((tmp_path / "eval" / "curve.json").read_text())["curve"]
    assert len(evaluated) == 1 and evaluated[0]["episodes"] == 2 and evaluated[0]["env_steps"] == 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == before


def test_a_gymnasium_task_trains_through_the_same_graph(tmp_path, ros_domain_id):
    """train env:=InvertedPendulum-v5: the bridge hosts the task, the learner takes its spec from
    the task, the limiter runs without a workspace, no simulated human; every transition is
    stored once and the evaluations report the task's return."""
    params = tmp_path / "gym.yaml"
    params.write_text(yaml.safe_dump({
        "actor": {"ros__parameters": {"max_env_steps": 300, "eval_every_steps": 150, "eval_episodes": 2,
                                      "results_dir": str(tmp_path / "results")}},
        "learner": {"ros__parameters": {"checkpoint_dir": str(tmp_path / "ckpt"), "tensorboard_dir": "",
                                        "batch_size": 32, "hidden_dims": [32, 32], "learning_starts": 50,
                                        "random_steps": 50, "publish_every_updates": 10,
                                        "report_period_s": 1.0}}}))
    out = run_composition(ros_domain_id, params, "train", "env:=InvertedPendulum-v5")
    assert not out.find(r"\[simulated_human\]"), "no simulated human on a hosted task"
    assert out.find(r"\[learner\] .*state_dim=4 cameras=\[\] gripper=False"), out.tail()
    assert out.find(r"\[safety_limiter\] .*without a workspace"), out.tail()
    curve = json.loads((tmp_path / "results" / "curve.json").read_text())["curve"]
    print("curve:", curve)
    assert len(curve) == 2 and curve[-1]["env_steps"] >= 300
    # InvertedPendulum-v5 pays 1 per step until the pole falls (0 on that step)
    for point in curve:
        assert point["mean_return"] >= point["mean_length"] - 1 and point["mean_return"] > 0
    frontiers, online = stored_frontiers(tmp_path / "ckpt")
    (_, frontier), = frontiers.items()
    assert frontier == curve[-1]["env_steps"] - 1 and online == curve[-1]["env_steps"]


def test_eval_refuses_an_empty_checkpoint_dir(tmp_path, demo_file, ros_domain_id):
    evaluation = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "runner.py"), "eval", f"domain_id:={ros_domain_id}",
         f"checkpoint_dir:={tmp_path / 'nothing'}", "episodes:=2", f"results_dir:={tmp_path / 'eval'}"],
        env=isolated_environment(ros_domain_id), capture_output=True, text=True, timeout=300)
    assert evaluation.returncode != 0
    assert "no checkpoint to serve" in evaluation.stdout, evaluation.stdout[-3000:]
    assert not (tmp_path / "eval" / "curve.json").exists()


class Graph:
    """The train composition's nodes as separate processes (so one can be killed alone)."""

    def __init__(self, domain_id: int, params: Path) -> None:
        comp = hc.load_compositions()["train"]
        values = comp.resolve_arguments({"human": "none", "domain_id": str(domain_id)})
        self.env = dict(isolated_environment(domain_id), **comp.environment(values))
        self.specs = {n.name: hc.NodeSpec(**{**n.__dict__, "extra_parameter_files": (str(params),)})
                      for n in comp.selected_nodes(values)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.outputs: dict[str, Output] = {}

    def start(self, name: str) -> subprocess.Popen:
        spec = self.specs[name]
        proc = subprocess.Popen([str(find_executable(spec.package, spec.executable)), *spec.ros_arguments()],
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs[name], self.outputs[name] = proc, Output(proc)
        return proc

    def find(self, name: str, pattern: str) -> list[re.Match]:
        return self.outputs[name].find(pattern)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def actor_steps(graph: Graph) -> int:
    found = graph.find("actor", r"\]: (\d+) env steps")
    return int(found[-1].group(1)) if found else 0


@pytest.fixture
def graph(tmp_path, demo_file, ros_domain_id):
    params = overrides(tmp_path, demo_file, max_env_steps=0, eval_every_steps=0, report_period_s=1.0)
    g = Graph(ros_domain_id, params)
    for name in ("sim_bridge", "intervention_mux", "safety_limiter", "learner", "actor"):
        g.start(name)
    yield g
    g.stop()


def test_r5_learner_killed_and_restarted_mid_run_loses_and_duplicates_nothing(graph, tmp_path):
    assert wait_for(lambda: actor_steps(graph) >= 60, 90.0), graph.outputs["actor"].tail()
    assert wait_for(lambda: graph.find("learner", r"checkpoint .*step_"), 30.0), graph.outputs["learner"].tail()
    actor_pid = graph.procs["actor"].pid
    graph.procs["learner"].send_signal(signal.SIGKILL)
    graph.procs["learner"].wait(timeout=10)
    killed_at = actor_steps(graph)
    time.sleep(3.0)  # the actor waits (paced), keeps its weights and its unacknowledged transitions
    assert graph.procs["actor"].poll() is None
    graph.start("learner")
    assert wait_for(lambda: graph.find("learner", r"learner ready: .*resumed from"), 60.0), \
        graph.outputs["learner"].tail()
    assert wait_for(lambda: actor_steps(graph) >= killed_at + 60, 120.0), graph.outputs["actor"].tail()
    graph.procs["actor"].send_signal(signal.SIGINT)  # stop sending, then let the learner save on exit
    graph.procs["actor"].wait(timeout=15)
    sent = int(graph.find("actor", r"\]: (\d+) env steps")[-1].group(1))
    time.sleep(1.0)
    graph.procs["learner"].send_signal(signal.SIGINT)
    assert graph.procs["learner"].wait(timeout=30) == 0, graph.outputs["learner"].tail()
    frontiers, online = stored_frontiers(tmp_path / "ckpt")
    (stream, frontier), = frontiers.items()
    print(f"R5: learner killed after {killed_at} actor steps and restarted; actor pid {actor_pid} throughout; "
          f"stored 0..{frontier} of stream {stream}, online buffer {online}")
    assert graph.procs["actor"].pid == actor_pid
    assert frontier + 1 >= sent and online == frontier + 1  # nothing lost, nothing stored twice
    assert graph.find("learner", r"resumed from .*step_")


def test_r6_actor_killed_and_replaced_gets_current_weights_at_once(graph):
    assert wait_for(lambda: actor_steps(graph) >= 60, 90.0), graph.outputs["actor"].tail()
    graph.procs["actor"].send_signal(signal.SIGKILL)
    graph.procs["actor"].wait(timeout=10)
    old = [int(m.group(1)) for m in graph.find("actor", r"weights v(\d+)")]
    time.sleep(2.0)
    assert graph.procs["learner"].poll() is None
    graph.start("actor")
    ready = r"\[(\d+\.\d+)\] \[actor\]: actor .* waiting for weights"
    received = r"\[(\d+\.\d+)\] \[actor\]: weights version (\d+) received"
    assert wait_for(lambda: graph.find("actor", received), 30.0), graph.outputs["actor"].tail()
    up = float(graph.find("actor", ready)[0].group(1))
    got = graph.find("actor", received)[0]
    waited = float(got.group(1)) - up
    print(f"R6: new actor got weights v{got.group(2)} {waited * 1e3:.0f} ms after its node was up "
          f"(the killed actor had v{max(old)})")
    # "At once": the weights already published (TRANSIENT_LOCAL), not the next publication; the
    # paced learner publishes nothing while no actor runs. The bound only covers DDS discovery,
    # which takes up to ~2 s on a loaded 2-core machine.
    assert int(got.group(2)) >= max(old) > 1 and waited < 5.0
    before = actor_steps(graph)
    assert wait_for(lambda: actor_steps(graph) >= before + 40, 60.0), graph.outputs["actor"].tail()
    assert graph.procs["learner"].poll() is None  # the learner never hung or died
