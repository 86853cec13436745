from setuptools import find_packages, setup

package_name = "hilserl_policy"

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
    description="Networks (encoders, actor, critics), observation spec, policy actor node, reward-classifier node and export.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "random_actor = hilserl_policy.random_actor_node:main",
            "policy_actor = hilserl_policy.policy_actor_node:main",
            "reward_classifier = hilserl_policy.reward_classifier_node:main",
        ],
    },
)
