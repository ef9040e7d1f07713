"""The live system this runs on: where things are, the state that outlives the boot, host
name and power, logs, and the external tools it drives.

| module | holds |
|---|---|
| ``tools`` | ``run()``, the one way to run an external tool; its one error ``ToolError`` |
| ``blkid``, ``partx``, ``mount`` | those tools, each wrapped once |
| ``udev`` | settle and wait for devices; without udevadm, skipped and polled |
| ``systemctl`` | units (start, restart, signal) and power |
| ``paths`` | where things are: the state directory, the data partition, the boot medium |
| ``state`` | the ``RTK-DATA`` partition and whether the state survives a reboot |
| ``atomic`` | files replaced whole (temporary file, fsync, rename, fsync of the directory) |
| ``machine`` | host name, addresses, power actions |
| ``logs`` | the log sources the menu's Logs shows |
| ``bundle`` | the logs bundle (one ``.tar.gz``, CHAP secrets masked) |
"""
