"""Stand-in for the `esp32` module on the virtual board: the chip temperature (knob
chip_temp_c, default 42 C) as mcu_temperature() (S2/S3/C3 style, C) and raw_temperature()
(original ESP32 style, F)."""
import simdev


def mcu_temperature():
    return float(simdev.knobs().get("chip_temp_c", 42.0))


def raw_temperature():
    return int(mcu_temperature() * 1.8 + 32)


def idf_heap_info(capabilities):
    return []


HEAP_DATA = 4
HEAP_EXEC = 1
