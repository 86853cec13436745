from setuptools import find_packages, setup

package_name = "hilserl_teleop"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="hilserl-ros2 developers",
    maintainer_email="dev@hilserl-ros2.invalid",
    description="Intervention mux, input devices, demo recorder and labelling.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "intervention_mux = hilserl_teleop.intervention_mux_node:main",
            "demo_recorder = hilserl_teleop.demo_recorder_node:main",
            "human_input = hilserl_teleop.human_input_node:main",
        ],
    },
)
