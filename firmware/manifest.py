# Freeze the fieldlink firmware into a custom MicroPython image (saves the heap that importing
# .py/.mpy from flash costs). Build from a MicroPython checkout, e.g. for an ESP32:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/fieldlink/firmware/manifest.py
# board.json and config.json stay on the board's filesystem (`fieldlink deploy` writes them).
metadata(description="fieldlink: sensors to a server over a WebSocket link that loses nothing",
         version="0.1.0")

# The port's own frozen modules (asyncio, _boot.py, ...) first.
include("$(PORT_DIR)/boards/manifest.py")

# The whole package: every .py under fieldlink/ (package() walks the folder).
package("fieldlink")

# A frozen main.py runs in place of one on the filesystem (pyexec_file_if_exists looks for a
# frozen one first). boot.py stays on the filesystem, where it can be edited.
module("main.py")
