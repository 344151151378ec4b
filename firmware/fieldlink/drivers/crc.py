"""CRC-8 checksums the sensors put on the wire: Sensirion (SHT3x/SHT4x) and Dallas/Maxim
1-Wire (DS18B20 ROM codes and scratchpads). Pure functions; bytes in, int out."""


def crc8_sensirion(data, start=0, end=-1):
    """CRC-8 of data[start:end]: polynomial 0x31 (x^8+x^5+x^4+1), init 0xFF, MSB first, no
    final XOR (SHT3x datasheet §4.12, SHT4x §4.4). crc8_sensirion(b'\\xbe\\xef') == 0x92."""
    if end < 0:
        end = len(data)
    crc = 0xFF
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def crc8_dallas(data, start=0, end=-1):
    """Dallas/Maxim 1-Wire CRC-8 of data[start:end]: x^8+x^5+x^4+1, LSB first (reflected
    polynomial 0x8C), init 0 (Maxim application note 27). Over a whole ROM code or scratchpad
    including its CRC byte the result is 0."""
    if end < 0:
        end = len(data)
    crc = 0
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0x8C
            else:
                crc >>= 1
    return crc
