"""An analog input through the ESP32's ADC (attenuation set by the board file), scaled by a
linear calibration: value = volts * scale + offset, in the unit the board file names."""
from fieldlink.drivers import SensorError


def linear(microvolts, scale=1.0, offset=0.0):
    """ADC reading in uV -> calibrated value."""
    return microvolts / 1000000 * scale + offset


class Analog:
    def __init__(self, adc, name="analog", scale=1.0, offset=0.0, unit="V",
                 quantity="voltage"):
        """adc: a machine.ADC already set to its attenuation (board.py builds it)."""
        self.name = name
        self.adc = adc
        self.scale = scale
        self.offset = offset
        self.channels = ((quantity, unit),)

    def start(self):
        return 0

    def read(self):
        try:
            uv = self.adc.read_uv()  # calibrated by the ESP-IDF eFuse data, unlike read_u16
        except OSError as e:
            raise SensorError("adc: %s" % e)
        return (linear(uv, self.scale, self.offset),)
