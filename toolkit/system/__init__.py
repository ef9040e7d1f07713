"""The live system this runs on: paths, host name and power, logs, and the external tools it
drives.

| module | holds |
|---|---|
| ``tools`` | ``run()``, the one way to run an external tool; its one error ``ToolError`` |
| ``blkid``, ``partx``, ``mount`` | those tools, each wrapped once |
| ``udev`` | settle and wait for devices; without udevadm, skipped and polled |
| ``systemctl`` | units and power |
| ``machine``, ``logs``, ``paths`` | host name and power, the log sources, where things are |
"""
