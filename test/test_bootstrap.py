"""The bootstrap's results: rewritten wheel paths, importable interfaces, a no-op second run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rewrite = _load("rewrite_ros_paths", ROOT / "scripts" / "rewrite_ros_paths.py")
bootstrap = _load("bootstrap", ROOT / "scripts" / "bootstrap.py")
uses_wheels = not os.environ.get("ROS_DISTRO") or (VENV / "share" / "rclpy").exists()


@pytest.mark.skipif(not uses_wheels, reason="a system ROS 2 is used; no wheels to rewrite")
def test_no_build_machine_path_left_in_venv_cmake_files():
    cmake_files = list((VENV / "share").rglob("*.cmake"))
    assert len(cmake_files) > 100, "the venv has no ROS CMake files: is this the bootstrap's venv?"
    stale = rewrite.stale_files(VENV)
    assert stale == [], f"{len(stale)} file(s) still name {rewrite.BUILD_PREFIX}, e.g. {stale[:3]}"
    text = (VENV / "share" / "service_msgs" / "cmake" /
            "export_service_msgs__rosidl_generator_pyExport.cmake").read_text()
    assert str(VENV) + "/lib/python3.11/site-packages/numpy/_core/include" in text


def test_rewrite_replaces_every_form_of_the_build_prefix(tmp_path):
    cmake = tmp_path / "share" / "pkg" / "cmake" / "pkgExport.cmake"
    marker = tmp_path / "share" / "ament_index" / "resource_index" / "parent_prefix_path" / "pkg"
    cmake.parent.mkdir(parents=True)
    marker.parent.mkdir(parents=True)
    b = rewrite.BUILD_PREFIX
    cmake.write_text(f'INCLUDES "{b}/include/python3.11;{b}/lib/python3.11/site-packages/numpy/_core/include"\n'
                     f'set(_prefix "{b}")\n')
    marker.write_text(b)
    untouched = tmp_path / "share" / "pkg" / "cmake" / "clean.cmake"
    untouched.write_text("set(x 1)\n")
    assert rewrite.rewrite(tmp_path) == 2
    assert rewrite.stale_files(tmp_path) == []
    text = cmake.read_text()
    assert f"{tmp_path}/lib/python3.11/site-packages/numpy/_core/include" in text
    assert "include/python3.11" in text and b not in text
    assert marker.read_text() == str(tmp_path)
    assert untouched.read_text() == "set(x 1)\n"
    assert rewrite.rewrite(tmp_path) == 0, "a second rewrite must change nothing"


def test_custom_messages_import_in_a_fresh_shell():
    out = subprocess.run(["bash", "-c", f". {ROOT}/env.sh && python -c "
                          "'from hilserl_msgs.msg import Transition, Topics; from hilserl_msgs.srv import ResetEpisode;"
                          " print(Topics.TRANSITIONS, Transition().sequence)'"],
                         capture_output=True, text=True, timeout=60, env={k: v for k, v in os.environ.items()
                                                                          if not k.startswith(("AMENT", "PYTHONPATH"))})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hilserl/transitions", "0"]


def test_env_script_makes_rclpy_refuse_an_int_in_a_float_field():
    """With the pip rclpy an int put into a float field is published as garbage (1 -> 5e-324);
    env.sh sets ROS_PYTHON_CHECK_FIELDS=1 so the assignment fails loudly instead."""
    out = subprocess.run(["bash", "-c", f". {ROOT}/env.sh && python -c "
                          "'from hilserl_msgs.msg import Reward\nr = Reward()\nr.reward = 1.0\n"
                          "try:\n    r.reward = 1\nexcept AssertionError as e:\n    print(\"refused:\", e)'"],
                         capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "ROS_PYTHON_CHECK_FIELDS"})
    assert out.returncode == 0, out.stderr
    assert "refused: The 'reward' field must be of type 'float'" in out.stdout, out.stdout


def test_second_bootstrap_redoes_nothing():
    first = subprocess.run([sys.executable, str(ROOT / "scripts" / "bootstrap.py")], capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "bootstrap.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "installing" not in out.stdout and "colcon build" not in out.stdout, out.stdout
    assert "ready in" in out.stdout


def test_failed_step_names_the_step_and_the_reason():
    with pytest.raises(bootstrap.StepError) as err:
        bootstrap.run("python-deps", [sys.executable, "-c", "import sys; print('no such package: foo'); sys.exit(3)"])
    assert "step 'python-deps' failed" in str(err.value)
    assert "exited 3" in str(err.value) and "no such package: foo" in str(err.value)


def test_all_seven_packages_are_installed():
    names = sorted(p.name for p in (ROOT / "install").iterdir() if p.is_dir())
    assert names == sorted(["hilserl_msgs", "hilserl_policy", "hilserl_learner", "hilserl_teleop",
                            "hilserl_drivers", "hilserl_sim", "hilserl_bringup"])
    share = ROOT / "install" / "hilserl_bringup" / "share" / "hilserl_bringup"
    assert (share / "launch" / "train.launch.py").exists()
    assert (share / "config" / "train.yaml").exists()
