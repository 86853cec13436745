from setuptools import find_packages, setup

package_name = "hilserl_learner"

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
    description="RLPD update, replay buffers, checkpoints, learner node, classifier training and bag-to-dataset conversion.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "transition_monitor = hilserl_learner.transition_monitor_node:main",
            "learner = hilserl_learner.learner_node:main",
            "record_expert_demos = hilserl_learner.record_expert_demos:main",
        ],
    },
)
