"""dpsctl: a local Azure IoT Hub Device Provisioning Service emulator and its administration CLI."""

__version__ = "0.1.0"
