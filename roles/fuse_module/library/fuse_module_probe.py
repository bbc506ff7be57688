#!/usr/bin/python3
"""Ansible module: read, in one pass, everything the fuse_module role decides on.

The role runs on slow hosts too (a VM under emulation, where every module run costs seconds),
so the read-only questions are asked here at once instead of one task each. Invariant: the
module never changes the host (check mode is supported and changes nothing either); questions
it cannot answer come back as empty values, and the role's tasks turn them into refusals.
"""

import gzip
import logging
import os
import re

from ansible.module_utils.basic import AnsibleModule

log = logging.getLogger(__name__)

DOCUMENTATION = r"""
module: fuse_module_probe
short_description: Read the kernel, package, DKMS and mount state the fuse_module role needs
description:
  - Read-only. Reads the kernel config, Secure Boot and signature enforcement, the headers and
    linux-source packages apt knows, the kernel's Debian package version, the DKMS status of
    the package, the loaded fuse module's version and the mounted FUSE file systems.
options:
  kernel_release: {type: str, required: true, description: The kernel release to build for.}
  config_path: {type: path, required: true, description: The kernel build config (plain or gzip).}
  series: {type: str, required: true, description: The kernel series (linux-source-SERIES).}
  efivar_path: {type: path, required: true, description: The SecureBoot EFI variable.}
  sig_enforce_path: {type: path, required: true, description: The module.sig_enforce parameter.}
  dkms_name: {type: str, required: true, description: The DKMS package name.}
"""

_VERSION_ROW = re.compile(r"^\s*(?:\*\*\*\s+)?(\S+)\s+-?\d+\s*$")


def read_text(path, limit=None):
    """Return the text of *path* (gzip or plain), or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit) if limit else f.read()
    except OSError:
        return None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    return data.decode("utf-8", "replace")


def kernel_config(path, release):
    """Read CONFIG_FUSE_FS and CONFIG_MODULE_SIG_FORCE; /proc/config.gz for the running kernel."""
    if not os.path.exists(path) and release == os.uname().release:
        path = "/proc/config.gz"
    text = read_text(path)
    if text is None:
        return {"config_file": path, "config_readable": False, "fuse_fs": "", "sig_force": False}
    fuse_fs = "n"
    for line in text.splitlines():
        if line.startswith("CONFIG_FUSE_FS="):
            fuse_fs = line.split("=", 1)[1].strip()
    return {
        "config_file": path,
        "config_readable": True,
        "fuse_fs": fuse_fs,
        "sig_force": "CONFIG_MODULE_SIG_FORCE=y" in text.splitlines(),
    }


def signing(efivar_path, sig_enforce_path, release):
    """Secure Boot is on when the EFI variable's byte after 4 attribute bytes is 1."""
    try:
        with open(efivar_path, "rb") as f:
            secure_boot = f.read(5)[4:5] == b"\x01"
    except OSError:
        secure_boot = False
    enforce = ""
    if release == os.uname().release:
        enforce = (read_text(sig_enforce_path) or "").strip()
    return {"secure_boot": secure_boot, "sig_enforce": enforce == "Y"}


def apt_policy(module, package):
    """Return (installed, candidate, every version apt lists) for *package*."""
    rc, out, _ = module.run_command(["apt-cache", "policy", package])
    if rc != 0:
        return "", "", []
    installed = re.search(r"Installed:\s+(\S+)", out)
    candidate = re.search(r"Candidate:\s+(\S+)", out)
    rows = [m.group(1) for m in map(_VERSION_ROW.match, out.splitlines()) if m]
    return _version(installed), _version(candidate), rows


def _version(match):
    """The version a policy line names, or "" for none."""
    return "" if not match or match.group(1) == "(none)" else match.group(1)


def packages(module, release, series):
    """The kernel's package version, and what apt offers for its headers and source."""
    rc, out, _ = module.run_command(["dpkg-query", "-W", "-f=${Version}", "linux-image-" + release])
    image_version = out.strip() if rc == 0 else ""
    _, headers_candidate, _ = apt_policy(module, "linux-headers-" + release)
    source_installed, _, source_versions = apt_policy(module, "linux-source-" + series)
    return {
        "image_version": image_version,
        "headers_installed": os.path.exists(f"/lib/modules/{release}/build/Makefile"),
        "headers_candidate": headers_candidate,
        "source_installed": source_installed,
        "source_versions": source_versions,
    }


def loaded_state(module, dkms_name):
    """DKMS status lines, the loaded fuse's version and the FUSE mounts."""
    dkms = module.get_bin_path("dkms")
    lines = []
    if dkms:
        rc, out, _ = module.run_command([dkms, "status", "-m", dkms_name])
        lines = out.splitlines() if rc == 0 else []
    table = [row.split() for row in (read_text("/proc/self/mounts") or "").splitlines()]
    fuse_type = re.compile(r"^fuse(blk)?(\.|$)")
    return {
        "dkms_lines": [line.strip() for line in lines if line.strip()],
        "loaded_version": (read_text("/sys/module/fuse/version") or "").strip(),
        "fuse_loaded": os.path.isdir("/sys/module/fuse"),
        "fuse_mounts": [r[1] for r in table if len(r) > 2 and fuse_type.match(r[2])],
        "fusectl_mounted": any(len(r) > 2 and r[2] == "fusectl" for r in table),
    }


def main():
    """Answer every question and exit; never changes anything."""
    module = AnsibleModule(
        argument_spec={
            "kernel_release": {"type": "str", "required": True},
            "config_path": {"type": "path", "required": True},
            "series": {"type": "str", "required": True},
            "efivar_path": {"type": "path", "required": True},
            "sig_enforce_path": {"type": "path", "required": True},
            "dkms_name": {"type": "str", "required": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    release = p["kernel_release"]
    result = {"running_kernel": os.uname().release}
    result.update(kernel_config(p["config_path"], release))
    result.update(signing(p["efivar_path"], p["sig_enforce_path"], release))
    result.update(packages(module, release, p["series"]))
    result.update(loaded_state(module, p["dkms_name"]))
    module.exit_json(changed=False, probe=result)


if __name__ == "__main__":
    main()
