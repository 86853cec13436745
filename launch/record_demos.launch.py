"""ros2 launch hilserl_bringup record_demos.launch.py [demos:=N] [bag:=NAME] [output_dir:=DIR] [domain_id:=N]

Built from the 'record_demos' entry of compositions.yaml, the same description that
launch/runner.py starts on machines without ros2 launch.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from hilserl_composition import launch_description  # noqa: E402


def generate_launch_description():
    return launch_description("record_demos")
