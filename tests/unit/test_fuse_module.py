"""Telling the glusterpy-patched fuse module from the stock one, from sysfs files laid out here."""

from __future__ import annotations

from glusterpy.fuse import module


def fake_sysfs(tmp_path, files: dict[str, str]):
    sys_module = tmp_path / "sys" / "module" / "fuse"
    (sys_module / "parameters").mkdir(parents=True)
    for name, text in files.items():
        (sys_module / name).write_text(text + "\n")
    return sys_module


def test_the_patched_module_is_named_with_its_raised_cap(tmp_path):
    sys_module = fake_sysfs(
        tmp_path,
        {
            "version": "glusterpy-1",
            "parameters/glusterpy_patched": "1",
            "parameters/max_pages_cap": "1024",
        },
    )
    found = module.loaded(sys_module, tmp_path / "no-limit-file")
    assert found == module.FuseModule(True, "glusterpy-1", 1024)
    assert found.describe() == (
        "fuse module: glusterpy-patched (glusterpy-1), allows requests up to 4096 KiB"
    )


def test_a_stock_module_allows_one_mib(tmp_path):
    sys_module = fake_sysfs(tmp_path, {})
    found = module.loaded(sys_module, tmp_path / "no-limit-file")
    assert found == module.FuseModule(False, None, 256)
    assert found.describe() == "fuse module: stock, allows requests up to 1024 KiB"


def test_a_cap_without_the_patched_marker_is_not_trusted(tmp_path):
    sys_module = fake_sysfs(tmp_path, {"parameters/max_pages_cap": "4096"})
    assert module.loaded(sys_module, tmp_path / "no-limit-file").max_pages == 256


def test_the_kernels_own_limit_wins_where_it_exists(tmp_path):
    sys_module = fake_sysfs(tmp_path, {})
    limit = tmp_path / "max_pages_limit"
    limit.write_text("512\n")
    assert module.loaded(sys_module, limit).max_pages == 512


def test_this_machine_is_described_from_its_real_files():
    found = module.loaded()
    assert found.max_pages >= 1
    assert found.describe().startswith("fuse module: ")
