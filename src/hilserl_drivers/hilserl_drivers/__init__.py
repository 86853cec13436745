"""Arm drivers (Dynamixel, Feetech), camera preprocessing, safety limiter and end-effector control (IK)."""
