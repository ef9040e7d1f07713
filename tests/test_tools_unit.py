"""The one runner of external tools (toolkit.system.tools) and its wrappers: the error
names the tool, its exit status and its last stderr line; a missing tool names its
Debian package; secrets never reach a message or a log; without udevadm the settle is
skipped, said once in the log; the command line turns any of it into one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import rtk

from toolkit.system import tools, udev
from toolkit.system.tools import ToolError, ToolNotInstalled

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def logs(rtk_dirs):
    """tools.log and iscsi.log under tmp_path/log, never /var/log/rtk."""
    return rtk_dirs / "log"


class BinDir(type(Path())):
    def add(self, name: str, body: str) -> Path:
        """A shell script ``name`` in this directory."""
        p = self / name
        p.write_text(f"#!/bin/sh\n{body}\n")
        p.chmod(0o755)
        return p


@pytest.fixture
def bin_dir(tmp_path, monkeypatch) -> BinDir:
    """An empty directory as the whole PATH: no tool is installed (``bin_dir.add`` puts
    a script there)."""
    d = BinDir(tmp_path / "bin")
    d.mkdir()
    monkeypatch.setenv("PATH", str(d))
    return d


def test_failure_names_tool_status_and_last_stderr_line():
    with pytest.raises(ToolError) as ei:
        tools.run(["sh", "-c", "echo first >&2; echo 'boom: it broke' >&2; exit 3"])
    e = ei.value
    assert (e.tool, e.status) == ("sh", 3)
    assert str(e) == "sh failed: boom: it broke (exit 3)"
    assert e.last_line == "boom: it broke" and "first" in e.stderr
    with pytest.raises(ToolError, match=r"^false failed \(exit 1\)$"):
        tools.run(["false"])
    with pytest.raises(ToolError, match=r"^sh failed: said on stdout \(exit 2\)$"):
        tools.run(["sh", "-c", "echo said on stdout; exit 2"])  # no stderr: stdout's last
    assert isinstance(e, OSError)  # every handler of OS failures catches it


def test_no_check_returns_the_status_and_ok_codes_pass():
    p = tools.run(["sh", "-c", "echo out; exit 3"], check=False)
    assert (p.returncode, p.stdout) == (3, "out\n")
    assert tools.run(["sh", "-c", "exit 3"], ok=(0, 3)).returncode == 3
    assert tools.run(["cat"], input="hello").stdout == "hello"
    assert tools.run(["cat"], input=b"\x00\x01", text=False).stdout == b"\x00\x01"


def test_a_signal_and_a_timeout_are_named():
    with pytest.raises(ToolError, match=r"^sh was killed by signal 9$"):
        tools.run(["sh", "-c", "kill -9 $$"])
    with pytest.raises(ToolError, match=r"^sleep timed out after 0.2 s$") as ei:
        tools.run(["sleep", "5"], timeout=0.2, check=False)
    assert ei.value.status is None and ei.value.timed_out


def test_not_installed_names_the_debian_package(bin_dir):
    with pytest.raises(ToolNotInstalled) as ei:
        tools.run(["iscsiadm", "-m", "session"])
    assert str(ei.value) == "iscsiadm is not installed (open-iscsi)"
    assert isinstance(ei.value, ToolError) and ei.value.package == "open-iscsi"
    for tool, package in (("udevadm", "udev"), ("qemu-img", "qemu-utils"),
                          ("blkid", "util-linux"), ("mount", "mount"), ("systemctl", "systemd")):
        with pytest.raises(ToolNotInstalled, match=f"^{tool} is not installed \\({package}\\)$"):
            tools.run([tool])
    with pytest.raises(ToolNotInstalled, match=r"^no-such-tool is not installed$"):
        tools.run(["no-such-tool"], check=False)  # not a status: raised even unchecked
    assert not tools.installed("iscsiadm")
    with pytest.raises(ToolNotInstalled, match="open-iscsi"):
        tools.require("iscsi-iname")
    with pytest.raises(ToolNotInstalled, match=r"^qemu-img is not installed \(qemu-utils\)$"):
        tools.popen(["/nowhere/qemu-img", "convert"])


def test_secrets_are_masked_in_errors_and_logs(caplog):
    secret = "Very-Secret-42"
    caplog.set_level(logging.DEBUG, logger="toolkit")
    with pytest.raises(ToolError) as ei:
        tools.run(["sh", "-c", f"echo 'auth {secret} refused' >&2; exit 24", "sh", secret],
                  secrets=[secret])
    e = ei.value
    assert secret not in str(e) and secret not in e.command and secret not in e.stderr
    assert str(e) == "sh failed: auth ******** refused (exit 24)"
    assert secret not in json.dumps(e.to_dict())
    assert secret not in caplog.text and "********" in caplog.text
    # a caller that masks by position (iscsiadm's -v after a -n ...password) passes `shown`
    with pytest.raises(ToolError) as ei:
        tools.run(["sh", "-c", "exit 2", "x", secret], shown=["sh", "-c", "exit 2", "x", "***"])
    assert secret not in ei.value.command and secret not in caplog.text


def test_iscsiadm_runner_maps_the_status_to_its_errors(bin_dir, rtk_dirs):
    from toolkit.iscsi import adm, errors

    bin_dir.add("iscsiadm", 'echo "iscsiadm: Login failed: authorization failure" >&2\n'
                            'echo "iscsiadm: Could not log into all portals" >&2; exit 24')
    with pytest.raises(errors.IscsiAuthError) as ei:
        adm.node_login("iqn.2001-05.com.san:csv1", "10.0.0.30", 3260, secrets=["s3cret"])
    assert ei.value.code == 24 and "iscsiadm exit 24" in str(ei.value)
    assert isinstance(ei.value.__cause__, ToolError)
    bin_dir.add("iscsiadm", "exec /bin/sleep 5")
    with pytest.raises(errors.IscsiPortalUnreachable, match="iscsiadm timed out after 0.1 s"):
        adm.run(["-m", "session"], "listing sessions", timeout=0.1)
    (bin_dir / "iscsiadm").unlink()
    with pytest.raises(errors.IscsiError) as ei:
        adm.session_list()
    assert str(ei.value) == "iscsiadm is not installed (open-iscsi)"
    assert ei.value.exit_code == errors.EXIT_ISCSID


def test_cli_says_a_missing_tool_in_one_line(bin_dir, rtk_dirs, monkeypatch):
    monkeypatch.setenv("RTK_INITIATOR_FILE", str(rtk_dirs / "initiatorname.iscsi"))
    p = rtk("iscsi", "discover", "127.0.0.1", env_extra={"PATH": str(bin_dir)}, timeout=60)
    assert p.stderr == "rtk iscsi: iscsiadm is not installed (open-iscsi)\n", p.stderr
    assert p.returncode == 13 and "Traceback" not in p.stderr
    p = rtk("iscsi", "initiator", "--generate", env_extra={"PATH": str(bin_dir)},
            timeout=60)
    assert p.stderr == "rtk iscsi: iscsi-iname is not installed (open-iscsi)\n", p.stderr
    assert p.returncode == 13


def test_cli_turns_any_tool_error_into_one_line(monkeypatch, capsys):
    from toolkit.cli import main
    from toolkit.disks import inventory

    def fail(*a, **kw):
        raise ToolError(["blkid", "-p", "/dev/sdz"], 4, "blkid: error: /dev/sdz: I/O error\n")
    monkeypatch.setattr(inventory, "list_disks", fail)
    assert main.main(["disks"]) == 1
    assert capsys.readouterr().err == \
        "rtk disks: blkid failed: error: /dev/sdz: I/O error (exit 4)\n"


def test_settle_is_skipped_without_udevadm_said_once(bin_dir, caplog, monkeypatch):
    monkeypatch.setattr(udev, "_said", False)
    caplog.set_level(logging.INFO, logger="toolkit")
    assert udev.settle(5) is False
    assert udev.settle(5) is False
    udev.wait_devices(["/dev/null"], 5)  # no udevadm: waits for the node only
    said = [r for r in caplog.records if "udevadm" in r.getMessage()]
    assert len(said) == 1, caplog.text
    assert "udevadm is not installed (udev)" in said[0].getMessage()
    assert "skipped" in said[0].getMessage()


def test_settle_runs_udevadm_when_installed(bin_dir, tmp_path):
    calls = tmp_path / "calls"
    bin_dir.add("udevadm", f'echo "$@" >> {calls}')
    assert udev.settle(7) is True
    udev.wait_devices(["/dev/sdz"], 3)
    assert calls.read_text().splitlines() == ["settle --timeout=7",
                                              "wait --settle --timeout=3 /dev/sdz"]


def test_wait_for_nodes_polls(tmp_path):
    there, later = tmp_path / "a", tmp_path / "b"
    there.touch()
    assert udev.wait_for_nodes([str(there)], timeout=1) == []
    assert udev.wait_for_nodes([str(there), str(later)], timeout=0.2) == [str(later)]


def test_restore_tools_raise_tool_errors(tmp_path):
    from toolkit.restore import fit, qemu

    with pytest.raises(qemu.QemuError) as ei:
        qemu.info(str(tmp_path / "missing.qcow2"), "qcow2")
    assert isinstance(ei.value, ToolError) and ei.value.tool == "qemu-img"
    assert str(ei.value).startswith("qemu-img info failed: Could not open")  # the subcommand
    assert str(ei.value).endswith("No such file or directory (exit 1)")
    disk = tmp_path / "disk"
    disk.write_bytes(b"\0" * 4096)
    with pytest.raises(ToolError, match=r"^sfdisk failed.* \(exit 1\)$"):
        fit.relocate_gpt_backup(str(disk))


def test_log_viewer_says_a_missing_command(bin_dir):
    from toolkit.system import logs

    src = logs.LogSource("Kernel messages (dmesg)", "command", ("dmesg", "--ctime"))
    assert logs.read(src) == "cannot run dmesg: dmesg is not installed (util-linux)"


def test_systemctl_wrapper(bin_dir, tmp_path):
    from toolkit.system import systemctl

    calls = tmp_path / "calls"
    bin_dir.add("systemctl", f'echo "$@" >> {calls}; [ "$1" != is-active ]')
    assert not systemctl.is_active("iscsid.service")
    systemctl.start("getty@tty1.service", block=False)
    systemctl.power("poweroff")
    assert calls.read_text().splitlines() == [
        "is-active --quiet iscsid.service", "--no-block start getty@tty1.service", "poweroff"]
    (bin_dir / "systemctl").unlink()
    assert not systemctl.is_active("iscsid.service")  # no systemd: nothing is active
    with pytest.raises(ToolNotInstalled, match=r"systemctl is not installed \(systemd\)"):
        systemctl.power("reboot")
