"""Compositions: the description is valid, its parts exist, launch files build from it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "launch"))

import hilserl_composition as hc  # noqa: E402
from runner import find_executable  # noqa: E402

COMPOSITIONS = hc.load_compositions()
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def test_every_launch_file_has_a_composition_and_back():
    assert sorted(p.name[: -len(".launch.py")] for p in LAUNCH_FILES) == sorted(COMPOSITIONS)


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_nodes_resolve_to_installed_executables(name):
    comp = COMPOSITIONS[name]
    for node in comp.nodes:
        path = find_executable(node.package, node.executable)
        assert path.name == node.executable


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_parameter_files_are_keyed_by_the_node_names(name):
    for node in COMPOSITIONS[name].nodes:
        for f in node.parameter_files():
            data = yaml.safe_load(f.read_text())
            assert node.name in data, f"{f} has no section for node {node.name}"
            assert "ros__parameters" in data[node.name]


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_every_section_of_a_parameter_file_reaches_its_node(name):
    """A section for a node that does not load the file is silently ignored: train.yaml's
    safety_limiter section once was, and the limiter logged every paced pause."""
    comp = COMPOSITIONS[name]
    loaded = {}
    for node in comp.nodes:
        for f in node.parameter_files():
            loaded.setdefault(f, set()).add(node.name)
    for f, names in loaded.items():
        sections = set(yaml.safe_load(f.read_text()))
        composition_nodes = {node.name for node in comp.nodes}
        unreached = (sections & composition_nodes) - names
        assert not unreached, f"{f.name}: sections {sorted(unreached)} are not loaded by those nodes in {name!r}"


def test_when_conditions_and_the_env_argument_select_the_hosted_task_variant():
    assert hc.when_holds("", "") and not hc.when_holds("x", "")
    assert hc.when_holds("x", "!") and not hc.when_holds("", "!")
    assert hc.when_holds("sim", "!real") and not hc.when_holds("real", "!real")
    comp = COMPOSITIONS["train"]
    pick = comp.selected_nodes(comp.resolve_arguments({}))
    gym = comp.selected_nodes(comp.resolve_arguments({"env": "InvertedPendulum-v5"}))
    assert sorted(n.name for n in pick) == sorted(["sim_bridge", "simulated_human", "intervention_mux",
                                                    "safety_limiter", "learner", "actor"])
    assert sorted(n.name for n in gym) == sorted(["sim_bridge", "intervention_mux", "safety_limiter",
                                                   "learner", "actor"])
    assert all("train_gym.yaml" in n.parameters for n in gym if n.name != "intervention_mux")
    assert not any("train_gym.yaml" in n.parameters for n in pick)
    bridge = next(n for n in gym if n.name == "sim_bridge")
    assert "gym_env_id:=InvertedPendulum-v5" in bridge.ros_arguments({"env": "InvertedPendulum-v5"})


def test_arguments_are_validated():
    comp = COMPOSITIONS["train"]
    assert comp.resolve_arguments({})["robot"] == "sim"
    assert comp.resolve_arguments({})["discovery_range"] == "LOCALHOST"   # conftest.py pins the environment
    with pytest.raises(hc.CompositionError, match="robot:=moon .* must be one of sim, real"):
        comp.resolve_arguments({"robot": "moon"})
    with pytest.raises(hc.CompositionError, match="not of the form"):
        hc.parse_launch_arguments(["robot=sim"])
    env = comp.environment(comp.resolve_arguments({"domain_id": "42"}))
    assert env["ROS_DOMAIN_ID"] == "42"
    assert env["ROS_PYTHON_CHECK_FIELDS"] == "1"


def test_discovery_range_declares_its_choices():
    comp = COMPOSITIONS["train"]
    spec = next(a for a in comp.arguments if a.name == "discovery_range")
    assert spec.choices == ("LOCALHOST", "SUBNET", "SYSTEM_DEFAULT", "OFF")
    assert comp.resolve_arguments({"discovery_range": "SUBNET"})["discovery_range"] == "SUBNET"
    with pytest.raises(hc.CompositionError, match="discovery_range:=localhst .* must be one of LOCALHOST"):
        comp.resolve_arguments({"discovery_range": "localhst"})


def test_a_namespaced_node_starts_under_its_fully_qualified_namespace(ros):
    """rcl refuses a relative `__ns:=ns1`; the runner must pass `/ns1`."""
    from hilserl_testing import isolated_environment, wait_for

    spec = hc.NodeSpec(package="hilserl_learner", executable="transition_monitor", name="learner",
                       namespace="robot_1")
    assert spec.ros_arguments()[:5] == ["--ros-args", "-r", "__node:=learner", "-r", "__ns:=/robot_1"]
    proc = subprocess.Popen([str(find_executable(spec.package, spec.executable)), *spec.ros_arguments()],
                            env=isolated_environment(ros.domain_id), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        probe = ros.node("namespace_probe")
        found = wait_for(lambda: ("learner", "/robot_1") in probe.get_node_names_and_namespaces()
                         or proc.poll() is not None, 20.0)
        assert proc.poll() is None, proc.stdout.read()
        assert found and ("learner", "/robot_1") in probe.get_node_names_and_namespaces()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_node_selection_follows_when(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"demo": {
        "arguments": {"robot": {"default": "sim", "choices": ["sim", "real"]}},
        "nodes": [{"package": "p", "executable": "bridge", "when": {"robot": "sim"}},
                  {"package": "p", "executable": "driver", "when": {"robot": "real"}},
                  {"package": "p", "executable": "learner"}]}}))
    comp = hc.load_compositions(path)["demo"]
    pick = lambda robot: [n.name for n in comp.selected_nodes(comp.resolve_arguments({"robot": robot}))]  # noqa: E731
    assert pick("sim") == ["bridge", "learner"]
    assert pick("real") == ["driver", "learner"]


@pytest.mark.parametrize("bad, message", [
    ({"demo": {"nodes": []}}, "needs a non-empty 'nodes' list"),
    ({"demo": {"nodes": [{"package": "p"}]}}, "'executable' must be a non-empty string"),
    ({"demo": {"nodes": [{"package": "p", "executable": "e", "colour": 1}]}}, "unknown key"),
    ({"demo": {"nodes": [{"package": "p", "executable": "e", "parameters": ["nope.yaml"]}]}}, "does not exist"),
    ({"demo": {"nodes": [{"package": "p", "executable": "e", "when": {"robot": "sim"}}]}}, "unknown argument robot"),
])
def test_bad_descriptions_are_refused_with_the_place(tmp_path, bad, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(hc.CompositionError, match=message) as err:
        hc.load_compositions(path)
    assert str(path) in str(err.value)


launch_ros_missing = importlib.util.find_spec("launch_ros") is None


@pytest.mark.skipif(launch_ros_missing, reason="launch_ros is not installed (not on PyPI); the runner covers this")
@pytest.mark.parametrize("launch_file", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_builds_its_description(launch_file):
    from launch import LaunchDescription
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location(launch_file.stem.replace(".", "_"), launch_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    nodes = [e for e in ld.entities if isinstance(e, Node)]
    comp = COMPOSITIONS[launch_file.name[: -len(".launch.py")]]
    assert len(nodes) == len(comp.nodes)
