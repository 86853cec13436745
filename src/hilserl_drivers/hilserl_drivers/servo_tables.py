"""Servo control tables as data: model numbers, register addresses and sizes, read-only
registers, sign conventions and units of the servos the project drives (XL330-M288, XL430-W250,
STS3215), and the encoding of register values. Shared by the bus layer (``motor_bus``) and the
protocol emulators (``bus_emulator``); sources are named at each table. No ROS, no SDK.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# ---------------------------------------------------------------------------- models
@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One servo model: its control table layout, defaults and the motor model's units."""

    name: str
    protocol: str
    """``"dynamixel"`` (Protocol 2.0) or ``"feetech"`` (SCS/STS)."""
    model_number: int
    firmware_version: int
    registers: Mapping[str, tuple[int, int]]
    """Register name -> (address, size in bytes)."""
    read_only: frozenset[str]
    defaults: Mapping[str, int]
    """Initial values (decoded) of registers other than model number, firmware, ID and positions."""
    table_size: int
    """Bytes of the control table; reads past it are refused."""
    effort_register: str
    """Present Current (XL330), Present Load (XL430, STS3215)."""
    velocity_register: str
    min_position_register: str
    max_position_register: str
    velocity_unit: float
    """Ticks/s per LSB of the velocity register."""
    effort_per_tick: float
    """Effort register LSBs per tick of position error."""
    effort_limit: int
    """|effort| is clipped to this."""
    twos_complement: frozenset[str] = frozenset()
    """Signed registers in two's complement (Dynamixel)."""
    sign_magnitude: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Signed registers in sign-magnitude: name -> sign bit (Feetech STS)."""
    eeprom_end: int = 0
    """Writes below this address are refused while torque is on (Dynamixel EEPROM lock); 0: none."""
    byteorder: str = "little"

    def address(self, name: str) -> tuple[int, int]:
        """(address, size) of ``name``; a KeyError lists the registers this model has."""
        try:
            return self.registers[name]
        except KeyError:
            raise KeyError(f"{self.name} has no register {name!r}; it has: {', '.join(self.registers)}") from None


# Dynamixel X series, Protocol 2.0. Addresses: ROBOTIS e-manual control tables
# (emanual.robotis.com/docs/en/dxl/x/xl330-m288/ and .../xl430-w250/), the same as the
# dynamixel_easy_sdk control_table/xl330_m288.model and xl430_w250.model files shipped
# with dynamixel-sdk 4.1.0; model numbers 1200 and 1060 from that package's dynamixel.model.
_DXL_X_COMMON = {
    "Model Number": (0, 2),
    "Model Information": (2, 4),
    "Firmware Version": (6, 1),
    "ID": (7, 1),
    "Baud Rate": (8, 1),
    "Return Delay Time": (9, 1),
    "Drive Mode": (10, 1),
    "Operating Mode": (11, 1),
    "Secondary(Shadow) ID": (12, 1),
    "Protocol Type": (13, 1),
    "Homing Offset": (20, 4),
    "Moving Threshold": (24, 4),
    "Temperature Limit": (31, 1),
    "Max Voltage Limit": (32, 2),
    "Min Voltage Limit": (34, 2),
    "PWM Limit": (36, 2),
    "Velocity Limit": (44, 4),
    "Max Position Limit": (48, 4),
    "Min Position Limit": (52, 4),
    "Shutdown": (63, 1),
    "Torque Enable": (64, 1),
    "LED": (65, 1),
    "Status Return Level": (68, 1),
    "Registered Instruction": (69, 1),
    "Hardware Error Status": (70, 1),
    "Velocity I Gain": (76, 2),
    "Velocity P Gain": (78, 2),
    "Position D Gain": (80, 2),
    "Position I Gain": (82, 2),
    "Position P Gain": (84, 2),
    "Feedforward 2nd Gain": (88, 2),
    "Feedforward 1st Gain": (90, 2),
    "Bus Watchdog": (98, 1),
    "Goal PWM": (100, 2),
    "Goal Velocity": (104, 4),
    "Profile Acceleration": (108, 4),
    "Profile Velocity": (112, 4),
    "Goal Position": (116, 4),
    "Realtime Tick": (120, 2),
    "Moving": (122, 1),
    "Moving Status": (123, 1),
    "Present PWM": (124, 2),
    "Present Velocity": (128, 4),
    "Present Position": (132, 4),
    "Velocity Trajectory": (136, 4),
    "Position Trajectory": (140, 4),
    "Present Input Voltage": (144, 2),
    "Present Temperature": (146, 1),
}
_DXL_READ_ONLY = frozenset({
    "Model Number", "Model Information", "Firmware Version", "Registered Instruction",
    "Hardware Error Status", "Realtime Tick", "Moving", "Moving Status", "Present PWM",
    "Present Current", "Present Load", "Present Velocity", "Present Position",
    "Velocity Trajectory", "Position Trajectory", "Present Input Voltage", "Present Temperature",
})
_DXL_SIGNED = frozenset({
    "Homing Offset", "Goal PWM", "Goal Current", "Goal Velocity", "Goal Position", "Present PWM",
    "Present Current", "Present Load", "Present Velocity", "Present Position",
    "Velocity Trajectory", "Position Trajectory",
})
_DXL_DEFAULTS = {
    "Baud Rate": 1, "Return Delay Time": 250, "Operating Mode": 3, "Secondary(Shadow) ID": 255,
    "Protocol Type": 2, "Moving Threshold": 10, "Temperature Limit": 70, "PWM Limit": 885,
    "Max Position Limit": 4095, "Min Position Limit": 0, "Shutdown": 52, "Status Return Level": 2,
    "Position P Gain": 400, "Present Temperature": 30,
}
# Dynamixel velocity unit: 0.229 rev/min per LSB (e-manual, Present Velocity (128)) = 0.229 * 4096 / 60 ticks/s.
_DXL_VELOCITY_UNIT = 0.229 * 4096 / 60

XL330_M288 = ModelSpec(
    name="xl330-m288", protocol="dynamixel", model_number=1200, firmware_version=52,
    registers={**_DXL_X_COMMON, "Current Limit": (38, 2), "PWM Slope": (62, 1), "Goal Current": (102, 2),
               "Present Current": (126, 2)},
    read_only=_DXL_READ_ONLY, table_size=147,
    defaults={**_DXL_DEFAULTS, "Max Voltage Limit": 70, "Min Voltage Limit": 35, "Current Limit": 1750,
              "Velocity Limit": 445, "Goal Current": 1750, "Present Input Voltage": 50},
    effort_register="Present Current", velocity_register="Present Velocity",
    min_position_register="Min Position Limit", max_position_register="Max Position Limit",
    velocity_unit=_DXL_VELOCITY_UNIT, effort_per_tick=2.0, effort_limit=1750,  # mA, up to Current Limit
    twos_complement=_DXL_SIGNED, eeprom_end=64,
)
XL430_W250 = ModelSpec(
    name="xl430-w250", protocol="dynamixel", model_number=1060, firmware_version=52,
    registers={**_DXL_X_COMMON, "Present Load": (126, 2)},
    read_only=_DXL_READ_ONLY, table_size=147,
    defaults={**_DXL_DEFAULTS, "Max Voltage Limit": 140, "Min Voltage Limit": 60, "Velocity Limit": 265,
              "Present Input Voltage": 120},
    effort_register="Present Load", velocity_register="Present Velocity",
    min_position_register="Min Position Limit", max_position_register="Max Position Limit",
    velocity_unit=_DXL_VELOCITY_UNIT, effort_per_tick=1.0, effort_limit=1000,  # 0.1 % of max torque
    twos_complement=_DXL_SIGNED, eeprom_end=64,
)

# Feetech STS3215 (SMS/STS memory table). Addresses and model number 777: Feetech's
# SMS/STS e-manual (doc.feetech.cn, FT-SMS-STS-emanual) as transcribed in LeRobot's
# motors/feetech/tables.py; ``scservo_sdk``'s ping reads the model number at address 3.
# Sign-magnitude direction bits: 15 for positions and speeds, 10 for Present Load, 11 for
# Homing Offset (Feetech's SCServo library: ReadPos/ReadSpeed/ReadLoad). Speed unit: step/s.
STS3215 = ModelSpec(
    name="sts3215", protocol="feetech", model_number=777, firmware_version=3,
    registers={
        "Firmware Major Version": (0, 1), "Firmware Minor Version": (1, 1), "Model Number": (3, 2),
        "ID": (5, 1), "Baud Rate": (6, 1), "Return Delay Time": (7, 1), "Response Status Level": (8, 1),
        "Min Angle Limit": (9, 2), "Max Angle Limit": (11, 2), "Max Temperature Limit": (13, 1),
        "Max Input Voltage": (14, 1), "Min Input Voltage": (15, 1), "Max Torque Limit": (16, 2),
        "Phase": (18, 1), "Unloading Condition": (19, 1), "LED Alarm Condition": (20, 1),
        "P Coefficient": (21, 1), "D Coefficient": (22, 1), "I Coefficient": (23, 1),
        "Minimum Startup Force": (24, 2), "CW Dead Zone": (26, 1), "CCW Dead Zone": (27, 1),
        "Protection Current": (28, 2), "Angular Resolution": (30, 1), "Homing Offset": (31, 2),
        "Operating Mode": (33, 1), "Protective Torque": (34, 1), "Protection Time": (35, 1),
        "Overload Torque": (36, 1), "Torque Enable": (40, 1), "Acceleration": (41, 1),
        "Goal Position": (42, 2), "Goal Time": (44, 2), "Goal Speed": (46, 2), "Torque Limit": (48, 2),
        "Lock": (55, 1), "Present Position": (56, 2), "Present Speed": (58, 2), "Present Load": (60, 2),
        "Present Voltage": (62, 1), "Present Temperature": (63, 1), "Status": (65, 1), "Moving": (66, 1),
        "Present Current": (69, 2),
    },
    read_only=frozenset({"Firmware Major Version", "Firmware Minor Version", "Model Number", "Present Position",
                         "Present Speed", "Present Load", "Present Voltage", "Present Temperature", "Status",
                         "Moving", "Present Current"}),
    table_size=71,
    defaults={"Firmware Minor Version": 9, "Baud Rate": 0, "Return Delay Time": 0, "Response Status Level": 1,
              "Min Angle Limit": 0, "Max Angle Limit": 4095, "Max Temperature Limit": 70,
              "Max Input Voltage": 140, "Min Input Voltage": 40, "Max Torque Limit": 1000, "P Coefficient": 32,
              "Torque Limit": 1000, "Lock": 1, "Present Voltage": 120, "Present Temperature": 30},
    effort_register="Present Load", velocity_register="Present Speed",
    min_position_register="Min Angle Limit", max_position_register="Max Angle Limit",
    velocity_unit=1.0, effort_per_tick=1.0, effort_limit=1000,  # 0.1 % of max torque
    sign_magnitude={"Homing Offset": 11, "Goal Position": 15, "Goal Speed": 15, "Present Position": 15,
                    "Present Speed": 15, "Present Load": 10, "Present Current": 15},
)

DATA: dict[str, ModelSpec] = {spec.name: spec for spec in (XL330_M288, XL430_W250, STS3215)}
"""Every emulated model by name."""

MODEL_ALIASES = {"xl330": "xl330-m288", "xl430": "xl430-w250", "sts": "sts3215"}


def model_spec(model: str | ModelSpec) -> ModelSpec:
    """The spec of ``model`` (a ``DATA`` name, an alias such as ``"xl330"``, or a spec)."""
    if isinstance(model, ModelSpec):
        return model
    key = MODEL_ALIASES.get(model.lower(), model.lower())
    if key not in DATA:
        raise ValueError(f"unknown servo model {model!r}; known: {', '.join([*DATA, *MODEL_ALIASES])}")
    return DATA[key]


# ------------------------------------------------------------------- value encoding
def encode_value(spec: ModelSpec, name: str, value: int) -> bytes:
    """``value`` as the bytes of register ``name`` (sign convention and byte order of the model)."""
    _, size = spec.address(name)
    bits = 8 * size
    value = int(value)
    if name in spec.sign_magnitude:
        bit = spec.sign_magnitude[name]
        if abs(value) >= 1 << bit:
            raise ValueError(f"{spec.name} {name}: {value} does not fit a sign-magnitude value with sign bit {bit}")
        raw = (-value) | (1 << bit) if value < 0 else value
    elif name in spec.twos_complement:
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise ValueError(f"{spec.name} {name}: {value} does not fit {size} signed bytes")
        raw = value & ((1 << bits) - 1)
    else:
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{spec.name} {name}: {value} does not fit {size} unsigned bytes")
        raw = value
    return raw.to_bytes(size, spec.byteorder)


def decode_value(spec: ModelSpec, name: str, raw: bytes) -> int:
    """The value register ``name`` holds in ``raw`` (its bytes)."""
    value = int.from_bytes(raw, spec.byteorder)
    if name in spec.sign_magnitude:
        bit = spec.sign_magnitude[name]
        if value & (1 << bit):
            value = -(value & ~(1 << bit))
    elif name in spec.twos_complement:
        bits = 8 * len(raw)
        if value & (1 << (bits - 1)):
            value -= 1 << bits
    return value
