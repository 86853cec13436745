from glob import glob

from setuptools import find_packages, setup

package_name = "hilserl_sim"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/scenes", glob("scenes/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="hilserl-ros2 developers",
    maintainer_email="dev@hilserl-ros2.invalid",
    description="MuJoCo bridge node (same topics as the real arm), task scenes, scripted expert and gymnasium bridge.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sim_bridge = hilserl_sim.sim_bridge_node:main",
            "simulated_human = hilserl_sim.simulated_human_node:main",
        ],
    },
)
