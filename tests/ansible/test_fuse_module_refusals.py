"""The fuse_module role's refusals, run for real with ansible-playbook against this machine.

Each test runs the role's validation (tasks_from: validate, which only reads) on localhost with
the role's path variables pointed at files the test writes: a kernel config, a Secure Boot EFI
variable. The kernel release is set to one that is not running, so nothing of this machine's
kernel leaks in, except in the test that checks this machine itself (its kernel has fuse built
in, so the role must refuse here). Invariant: every run changes nothing on this machine, and a
refusal is exactly one failed task with a message that names the cause.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).parent / "ansible-playbook"
# A 6.1 release no archive will ever carry, so apt has no headers for it.
NO_SUCH_KERNEL = "6.1.0-999-amd64"

VALIDATE_PLAY = """\
- name: Validate
  hosts: localhost
  connection: local
  gather_subset: [min]
  tasks:
    - name: Run the role's checks
      ansible.builtin.include_role:
        name: fuse_module
        tasks_from: validate
"""

MAIN_PLAY = """\
- name: Apply
  hosts: localhost
  connection: local
  gather_subset: [min]
  roles:
    - role: fuse_module
"""


def run_role(tmp_path: Path, extra_vars: dict, play: str = VALIDATE_PLAY, check=False) -> dict:
    """Run *play* with *extra_vars*; return the json callback's report (rc included)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(play)
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps({"fuse_module_enabled": True, **extra_vars}))
    env = dict(
        os.environ,
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        # Interpreter discovery may find a broken shim on developer machines; use ours.
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    argv = [str(PLAYBOOK_BIN), "-i", "localhost,", str(playbook), "-e", f"@{vars_file}"]
    if check:
        argv.append("--check")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    start = proc.stdout.find("{")
    assert start >= 0, f"no JSON from ansible-playbook: {proc.stdout}\n{proc.stderr}"
    report = json.loads(proc.stdout[start:])
    report["rc"] = proc.returncode
    return report


def failures(report: dict) -> list[str]:
    """The messages of every failed task, in order."""
    found = []
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("failed"):
                    found.append(result.get("msg", ""))
    return found


def changes(report: dict) -> int:
    return sum(stats["changed"] for stats in report["stats"].values())


def assert_refused(report: dict, *words: str) -> str:
    """One failed task, no change, and a message holding every one of *words*."""
    messages = failures(report)
    assert report["rc"] != 0
    assert len(messages) == 1, messages
    assert messages[0].startswith("fuse_module: "), messages[0]
    for word in words:
        assert word in messages[0], (word, messages[0])
    assert changes(report) == 0
    return messages[0]


def kernel_config(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "config"
    path.write_text("# a kernel config written by the test\n" + "\n".join(lines) + "\n")
    return str(path)


def efivar(tmp_path: Path, secure_boot: bool) -> str:
    """A SecureBoot EFI variable: 4 attribute bytes, then 1 (on) or 0 (off)."""
    path = tmp_path / "SecureBoot"
    path.write_bytes(b"\x06\x00\x00\x00" + (b"\x01" if secure_boot else b"\x00"))
    return str(path)


def base_vars(tmp_path: Path, config: str, release: str = NO_SUCH_KERNEL) -> dict:
    return {
        "fuse_module_kernel_release": release,
        "fuse_module_kernel_config_path": config,
        "fuse_module_secure_boot_efivar_path": efivar(tmp_path, secure_boot=False),
        "fuse_module_sig_enforce_path": str(tmp_path / "no-sig-enforce"),
    }


def test_this_machine_is_refused_because_its_kernel_has_fuse_built_in(tmp_path):
    # This machine's kernel has no /boot/config; the role falls back to /proc/config.gz.
    config = Path(f"/boot/config-{os.uname().release}")
    if not config.exists() and not Path("/proc/config.gz").exists():
        pytest.fail("this test needs a kernel config in /boot or /proc/config.gz to read")
    report = run_role(tmp_path, {})
    assert_refused(report, "fuse is built into kernel", os.uname().release, "CONFIG_FUSE_FS=y")


def test_fuse_built_in_is_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=y", "CONFIG_CUSE=y")
    report = run_role(tmp_path, base_vars(tmp_path, config))
    assert_refused(report, "fuse is built into kernel", NO_SUCH_KERNEL, config)


def test_fuse_built_in_is_refused_from_a_gzip_config_in_check_mode(tmp_path):
    import gzip

    path = tmp_path / "config.gz"
    path.write_bytes(gzip.compress(b"CONFIG_FUSE_FS=y\n"))
    report = run_role(tmp_path, base_vars(tmp_path, str(path)), check=True)
    assert_refused(report, "fuse is built into kernel", str(path))


def test_kernel_without_fuse_is_refused(tmp_path):
    config = kernel_config(tmp_path, "# CONFIG_FUSE_FS is not set")
    report = run_role(tmp_path, base_vars(tmp_path, config))
    assert_refused(report, "has no FUSE", config)


def test_unreadable_kernel_config_is_refused(tmp_path):
    missing = str(tmp_path / "no-such-config")
    report = run_role(tmp_path, base_vars(tmp_path, missing))
    assert_refused(report, "cannot read the config", missing, "fuse_module_kernel_config_path")


def test_kernel_outside_the_patch_series_is_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m")
    report = run_role(tmp_path, base_vars(tmp_path, config, release="6.12.0-1-amd64"))
    assert_refused(report, "not in the", "6.1 series", "6.12.0-1-amd64")


def test_secure_boot_without_a_signing_key_is_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m")
    extra = base_vars(tmp_path, config)
    extra["fuse_module_secure_boot_efivar_path"] = efivar(tmp_path, secure_boot=True)
    report = run_role(tmp_path, extra)
    assert_refused(report, "enforces module signatures", "Secure Boot", "fuse_module_signing_key")


def test_forced_module_signatures_without_a_key_are_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m", "CONFIG_MODULE_SIG_FORCE=y")
    report = run_role(tmp_path, base_vars(tmp_path, config))
    assert_refused(report, "enforces module signatures", "CONFIG_MODULE_SIG_FORCE")


def test_kernel_without_headers_is_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m")
    report = run_role(tmp_path, base_vars(tmp_path, config))
    assert_refused(report, "no headers for kernel", f"linux-headers-{NO_SUCH_KERNEL}")


def test_a_signing_key_lets_secure_boot_hosts_through_to_the_next_check(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m")
    key, cert = tmp_path / "mok.priv", tmp_path / "mok.der"
    key.write_text("not a real key: the role only checks that the files exist\n")
    cert.write_text("not a real certificate\n")
    extra = base_vars(tmp_path, config)
    extra.update(
        fuse_module_secure_boot_efivar_path=efivar(tmp_path, secure_boot=True),
        fuse_module_signing_key=str(key),
        fuse_module_signing_cert=str(cert),
    )
    report = run_role(tmp_path, extra)
    # Past the signing check, the made-up kernel still has no headers.
    assert_refused(report, "no headers for kernel")


def test_a_missing_signing_key_file_is_refused(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=m")
    extra = base_vars(tmp_path, config)
    missing = str(tmp_path / "no-such-key")
    extra.update(fuse_module_signing_key=missing, fuse_module_signing_cert=missing)
    report = run_role(tmp_path, extra)
    assert_refused(report, "signing key file", missing)


def test_the_role_does_nothing_unless_enabled(tmp_path):
    config = kernel_config(tmp_path, "CONFIG_FUSE_FS=y")
    extra = base_vars(tmp_path, config)
    extra["fuse_module_enabled"] = False
    report = run_role(tmp_path, extra, play=MAIN_PLAY)
    assert report["rc"] == 0, failures(report)
    assert failures(report) == []
    assert changes(report) == 0
