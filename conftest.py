"""Fixtures for every test of the workspace (pytest finds this file at the root).

Every process of a test run stays on localhost, and every ROS test gets its own
ROS_DOMAIN_ID, leased with a file lock so that concurrent runs never meet.
"""

import os
import sys
from pathlib import Path

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
sys.path.insert(0, str(Path(__file__).parent / "test"))

from hilserl_testing import DomainLease, RosHarness  # noqa: E402


@pytest.fixture
def ros_domain_id():
    """A domain id no other process on this machine uses while the test runs."""
    with DomainLease() as lease:
        yield lease.domain_id


@pytest.fixture
def ros(ros_domain_id):
    """A RosHarness: private rclpy Context on the test's own domain, executor spinning."""
    harness = RosHarness(ros_domain_id)
    yield harness
    harness.shutdown()


@pytest.fixture
def ros_context(ros):
    """The private rclpy Context of the test."""
    return ros.context
