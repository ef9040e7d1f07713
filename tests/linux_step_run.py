"""The restore's Linux step run as `rtk restore` runs it (Ctrl-C handled by
cli.common.cancel_on_signals), on a loop device already attached, with a fake sysfs for
its controller. Usage: linux_step_run.py DEV SYSFS TMPDIR. Prints the record as JSON."""

import json
import sys
from types import SimpleNamespace

from toolkit.cli.common import cancel_on_signals
from toolkit.disks import gate
from toolkit.disks.endpoint import resolve
from toolkit.disks.inventory import list_disks
from toolkit.restore import RestoreOptions, contents, linux_initramfs

dev, sysfs, tmpdir = sys.argv[1:4]
target = resolve(dev, list_disks())
hold = gate.open_target(target)
plan = SimpleNamespace(options=RestoreOptions(linux_initramfs="auto", tmpdir=tmpdir,
                                              sys_root=sysfs), target=target)
res = SimpleNamespace(contents=contents.inspect_disk(dev), warnings=[])
cancel = cancel_on_signals()
print("step starting", flush=True)
record = linux_initramfs.run(plan, res, hold, cancel)
print(json.dumps({"record": record, "warnings": res.warnings}, default=str), flush=True)
hold.close()
