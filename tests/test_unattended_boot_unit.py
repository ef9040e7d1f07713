"""The unattended run as the boot service starts it (``rtk unattended --boot``): which
consoles it writes, the log file, and the handover file that frees the consoles.
systemd itself (the gettys' ExecCondition, the service) is exercised in the VM lab
(test_unattended_vm.py); here ``systemctl`` is replaced by a recorder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.unattended import boot
from toolkit.unattended.cmdline import Cmdline


@pytest.fixture
def env(tmp_path, log_dir, run_dir, monkeypatch):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("tty1", "ttyS0"):
        (dev / name).write_text("")
    monkeypatch.setenv("RTK_CONSOLE_DIR", str(dev))
    started: list[list[str]] = []
    monkeypatch.setattr(boot, "start_units", started.append)
    return {"dev": dev, "run": run_dir, "log": log_dir, "started": started}


@pytest.mark.parametrize("text, expected", [
    ("quiet", ["tty1"]),
    ("console=ttyS0,115200n8 console=tty0", ["tty1", "ttyS0"]),
    ("console=/dev/ttyS1 console=ttyS1,9600 console=hvc0", ["tty1", "ttyS1", "hvc0"]),
    ("console=tty1 console=ttyAMA0", ["tty1", "ttyAMA0"]),
    ("console console=ttyS0", ["tty1"]),  # a bare "console" is not a console
])
def test_console_ttys(text, expected):
    assert boot.console_ttys(Cmdline(text)) == expected


def test_streams_clear_the_virtual_console_only_and_stamp_the_log(env):
    streams = boot.open_streams(["tty1", "ttyS0", "ttyS9"])  # ttyS9 does not exist
    assert len(streams) == 4  # stdout, tty1, ttyS0, the log
    for s in streams[1:]:
        s.write("rtk: hello\nrtk: world\n")
        s.flush()
    assert (env["dev"] / "tty1").read_text() == boot.CLEAR + "rtk: hello\nrtk: world\n"
    assert (env["dev"] / "ttyS0").read_text() == "rtk: hello\nrtk: world\n"
    log = (env["log"] / "unattended.log").read_text().splitlines()
    assert [re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", "", x) for x in log] == \
        ["rtk: hello", "rtk: world"]
    assert all(re.match(r"\d{4}-", x) for x in log)


@pytest.mark.parametrize("action, units", [
    ("stay", [["getty@tty1.service", "serial-getty@ttyS0.service"]]),
    ("menu", [["getty@tty1.service", "serial-getty@ttyS0.service"]]),
    ("poweroff", []),  # shutting down: the consoles are not handed to a getty
])
def test_hand_over(env, action, units):
    path = boot.hand_over(action, ["why", "report: x"], ["tty1", "ttyS0"])
    assert json.loads(Path(path).read_text()) == {"action": action, "lines": ["why", "report: x"]}
    assert env["started"] == units


def test_boot_run_with_invalid_parameters_holds_the_consoles_with_the_reason(env, capsys):
    code = cli.main(["unattended", "--boot", "--cmdline",
                     "console=ttyS0,115200 rtk.mode=restore rtk.verify=maybe"])
    assert code == 2
    serial = (env["dev"] / "ttyS0").read_text()
    assert "INVALID PARAMETERS" in serial and "rtk.verify=maybe" in serial
    handover = json.loads((env["run"] / "unattended-console.json").read_text())
    assert handover["action"] == "stay"
    assert any("rtk.verify=maybe" in line for line in handover["lines"])
    assert env["started"] == [["getty@tty1.service", "serial-getty@ttyS0.service"]]
    assert "INVALID PARAMETERS" in (env["log"] / "unattended.log").read_text()
    assert capsys.readouterr().out.rstrip().endswith("action: stay")


def test_boot_run_that_stops_before_writing_hands_over_held(env, tmp_path):
    # a plan whose disk cannot be found: stopped in "select", nothing written
    code = cli.main(["unattended", "--boot", "--medium", str(tmp_path), "--cmdline",
                     "rtk.mode=restore rtk.image=/none.img rtk.disk=serial:NO-SUCH-DISK-42 "
                     "rtk.consent=serial:NO-SUCH-DISK-42"])
    assert code == 5
    handover = json.loads((env["run"] / "unattended-console.json").read_text())
    assert handover["action"] == "stay"
    text = "\n".join(handover["lines"])
    assert "STOPPED before writing anything" in text and "NO-SUCH-DISK-42" in text
    assert "STOPPED" in (env["dev"] / "tty1").read_text()
