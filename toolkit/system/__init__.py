"""The live system this runs on: where things are, the state that outlives the boot, host
name and power, logs, and the external tools it drives.

| module | holds |
|---|---|
| ``tools`` | ``run()``, the one way to run an external tool; its one error ``ToolError`` |
| ``blkid``, ``partx``, ``mount`` | those tools, each wrapped once |
| ``udev`` | settle and wait for devices; without udevadm, skipped and polled |
| ``systemctl`` | units (start, restart, signal) and power |
| ``paths`` | where things are: the state directory, the data partition, the boot medium |
| ``state`` | the ``RTK-DATA`` partition: found and mounted at boot, the state moved onto it |
| ``state_location`` | where the state directory really is, and whether it survives a reboot |
| ``volumes`` | filesystems that can hold the state or a bundle: the menu's choice, mounting |
| ``machine`` | host name, addresses, power actions |
| ``logs`` | the log sources the menu's Logs shows |
| ``bundle`` | the logs bundle (one ``.tar.gz``, CHAP secrets masked): building, saving |
| ``bundle_collect`` | what the bundle holds, collected (files, commands, probes), with its index |
| ``bundle_secrets`` | the bundle's redaction: secrets given and found, masked everywhere |
| ``bundle_post`` | sending a bundle with HTTP POST |
| ``keymap`` | the VGA console's keyboard layout (``rtk.keymap=``, the menu's Keyboard) |
| ``remote`` | remote access over SSH: sshd's configuration, on and off, its status, the header |
| ``remote_keys`` | public keys (``rtk.ssh=``, authorized_keys files) checked, fingerprints |
| ``remote_sessions`` | who is logged in over SSH now, from sshd's processes |
| ``remote_boot`` | remote access at boot (``rtk-remote.service``), keys from a URL |

Files replaced whole (temporary file, fsync, rename, fsync of the directory) are
:mod:`toolkit.atomic`'s, which the block-I/O layer's mapfile uses too.
"""
