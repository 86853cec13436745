"""launch/runner.py with real processes and real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from hilserl_testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "launch" / "runner.py"

FAKE_NODE = textwrap.dedent("""\
    #!{python}
    import os, signal, sys, time
    args = sys.argv[1:sys.argv.index("--ros-args")] if "--ros-args" in sys.argv else sys.argv[1:]
    name = sys.argv[sys.argv.index("-r") + 1].split(":=")[1] if "-r" in sys.argv else "?"
    opts = dict(zip(args[::2], args[1::2]))
    state = os.path.join(os.environ["FAKE_STATE"], name)
    open(state + ".pid", "w").write(str(os.getpid()))
    def on_signal(signum, frame):
        open(state + ".signal", "a").write(signal.Signals(signum).name + "\\n")
        if opts.get("--ignore") != signal.Signals(signum).name:
            sys.exit(0)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"hello from {{name}}", flush=True)
    end = time.monotonic() + float(opts.get("--exit-after", "1e9"))
    while time.monotonic() < end:
        time.sleep(0.02)
    sys.exit(int(opts.get("--code", "0")))
""")


@pytest.fixture
def workspace(tmp_path):
    prefix = tmp_path / "prefix"
    exe = prefix / "lib" / "fakepkg" / "fake_node"
    exe.parent.mkdir(parents=True)
    exe.write_text(FAKE_NODE.format(python=sys.executable))
    exe.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    return tmp_path, prefix, state


def description(tmp_path: Path, nodes: list[dict]) -> Path:
    import yaml

    path = tmp_path / "compositions.yaml"
    path.write_text(yaml.safe_dump({"demo": {"description": "test", "nodes": [
        {"package": "fakepkg", "executable": "fake_node", **n} for n in nodes]}}))
    return path


def start(tmp_path, prefix, state, nodes, *extra):
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), FAKE_STATE=str(state))
    return subprocess.Popen([sys.executable, str(RUNNER), "--grace", "2", "--description",
                             str(description(tmp_path, nodes)), "demo", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def pids(state: Path, names) -> dict[str, int]:
    return {n: int((state / f"{n}.pid").read_text()) for n in names}


def all_started(state, names):
    return all((state / f"{n}.pid").exists() for n in names)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_sigint_is_forwarded_and_everything_stops(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [{"name": "alpha", "required": True}, {"name": "beta"}])
    assert wait_for(lambda: all_started(state, ["alpha", "beta"]), 15.0)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "[alpha] hello from alpha" in out and "[beta] hello from beta" in out
    for name in ("alpha", "beta"):
        assert (state / f"{name}.signal").read_text().split() == ["SIGINT"]
    assert all(gone(p) for p in pids(state, ["alpha", "beta"]).values())


def test_sigterm_is_forwarded_as_sigterm(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [{"name": "alpha"}])
    assert wait_for(lambda: all_started(state, ["alpha"]), 15.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert (state / "alpha.signal").read_text().split() == ["SIGTERM"]


def test_required_node_failure_stops_the_rest_and_fails(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [
        {"name": "crasher", "required": True, "arguments": ["--exit-after", "1.0", "--code", "3"]},
        {"name": "bystander"}])
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "crasher exited with code 3" in out
    assert (state / "bystander.signal").read_text().split() == ["SIGINT"]
    assert gone(pids(state, ["bystander"])["bystander"])


def test_optional_node_exit_does_not_stop_the_composition(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [
        {"name": "shortlived", "arguments": ["--exit-after", "0.3", "--code", "5"]}, {"name": "keeper"}])
    assert wait_for(lambda: all_started(state, ["shortlived", "keeper"]), 15.0)
    time.sleep(1.5)
    assert proc.poll() is None, "an optional node's exit stopped the composition"
    assert not gone(pids(state, ["keeper"])["keeper"])
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "shortlived exited with code 5" in out


def test_node_ignoring_sigint_is_escalated(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [{"name": "stubborn", "arguments": ["--ignore", "SIGINT"]}])
    assert wait_for(lambda: all_started(state, ["stubborn"]), 15.0)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1, out       # escalation is a failure worth reporting
    assert time.monotonic() - t0 < 8.0
    assert (state / "stubborn.signal").read_text().split() == ["SIGINT", "SIGTERM"]
    assert "sending SIGTERM" in out
    assert gone(pids(state, ["stubborn"])["stubborn"])


def test_killed_runner_leaves_no_orphan(workspace):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [{"name": "alpha"}, {"name": "beta"}])
    assert wait_for(lambda: all_started(state, ["alpha", "beta"]), 15.0)
    children = pids(state, ["alpha", "beta"])
    proc.kill()
    proc.communicate(timeout=10)
    assert wait_for(lambda: all(gone(p) for p in children.values()), 10.0), "children outlived a SIGKILLed runner"


@pytest.mark.parametrize("args, message", [
    (["colour:=red"], "has no argument colour"),
    (["domain_id"], "not of the form name:=value"),
])
def test_bad_launch_arguments_are_named(workspace, args, message):
    tmp_path, prefix, state = workspace
    proc = start(tmp_path, prefix, state, [{"name": "alpha"}], *args)
    out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 2
    assert message in out
    assert not (state / "alpha.pid").exists(), "a node started despite a bad argument"


def test_missing_executable_fails_before_anything_starts(workspace):
    tmp_path, prefix, state = workspace
    path = description(tmp_path, [{"name": "alpha"}, {"executable": "no_such_node"}])
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix), FAKE_STATE=str(state))
    out = subprocess.run([sys.executable, str(RUNNER), "--description", str(path), "demo"], env=env,
                         capture_output=True, text=True, timeout=15)
    assert out.returncode == 2
    assert "executable 'no_such_node' of package 'fakepkg' not found" in out.stderr
    assert not (state / "alpha.pid").exists()
