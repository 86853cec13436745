"""The suite runs on a machine with a full ROS 2 installation.

A sourced ROS 2 puts `launch_testing` and `launch_testing_ros` on the path, and each
registers a pytest plugin (entry points `launch_testing` and `launch_ros`) whose hooks
still take the `path` argument that pytest 9 removed: pytest then dies before
collecting anything. `pytest.ini` blocks both plugins (the suite does not use them).
Here a distribution with the same entry point and hook signature stands in for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("entry_point", ["launch_testing", "launch_ros"])
def test_suite_collects_with_ros2_launch_testing_plugins_installed(tmp_path, entry_point):
    site = tmp_path / "site"
    dist = site / f"{entry_point}_standin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {entry_point}-standin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[pytest11]\n{entry_point} = standin_hooks_{entry_point}\n")
    # The hook signature the ROS 2 plugins have (py.path `path`, removed in pytest 9).
    (site / f"standin_hooks_{entry_point}.py").write_text(textwrap.dedent("""
        def pytest_pycollect_makemodule(path, parent):
            return None
    """))
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_one.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"),
                             "--rootdir", str(tests), str(tests / "test_one.py"), "-q"],
                            env=env, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed" in output, output
