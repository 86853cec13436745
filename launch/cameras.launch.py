"""ros2 launch hilserl_bringup cameras.launch.py [domain_id:=N]

Built from the 'cameras' entry of compositions.yaml, the same description that
launch/runner.py starts on machines without ros2 launch.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from hilserl_composition import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("cameras")
