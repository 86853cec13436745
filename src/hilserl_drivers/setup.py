from setuptools import find_packages, setup

package_name = "hilserl_drivers"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={package_name: ["models/*.xml"]},  # the Koch-style kinematic model (hilserl_drivers.arms)
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="hilserl-ros2 developers",
    maintainer_email="dev@hilserl-ros2.invalid",
    description="Arm drivers (Dynamixel, Feetech), camera preprocessing, safety limiter and end-effector control (IK).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "safety_limiter = hilserl_drivers.safety_limiter_node:main",
            "camera = hilserl_drivers.camera_node:main",
            "camera_preprocess = hilserl_drivers.camera_preprocess_node:main",
            "arm_driver = hilserl_drivers.arm_driver_node:main",
            "calibrate_arm = hilserl_drivers.calibrate:main",
        ],
    },
)
