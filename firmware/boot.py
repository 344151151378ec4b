# boot.py: runs first on every reset. Kept minimal on purpose: no Wi-Fi loop here (the link
# supervisor in main.py brings Wi-Fi up with deadlines), nothing that could lock out the REPL.
import gc

gc.collect()
