"""Run by test_isolation.py as a separate pytest session (not collected by the suite).

Publishes HILSERL_PROBE_TOKEN on a fixed topic for a few seconds on the test's
own leased domain (or on HILSERL_PROBE_DOMAIN when set, for the control case),
and writes every token it heard to HILSERL_PROBE_OUT as JSON.
"""

import json
import os
import time

from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import String

from hilserl_testing import RosHarness


def test_probe(ros_domain_id):
    forced = os.environ.get("HILSERL_PROBE_DOMAIN")
    harness = RosHarness(int(forced) if forced else ros_domain_id)
    try:
        token = os.environ["HILSERL_PROBE_TOKEN"]
        node = harness.node("isolation_probe")
        qos = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE)
        heard = set()
        node.create_subscription(String, "/hilserl_isolation_probe", lambda m: heard.add(m.data), qos)
        pub = node.create_publisher(String, "/hilserl_isolation_probe", qos)
        end = time.monotonic() + float(os.environ.get("HILSERL_PROBE_SECONDS", "4"))
        while time.monotonic() < end:
            pub.publish(String(data=token))
            time.sleep(0.05)
        with open(os.environ["HILSERL_PROBE_OUT"], "w") as f:
            json.dump({"domain_id": harness.domain_id, "heard": sorted(heard)}, f)
    finally:
        harness.shutdown()
