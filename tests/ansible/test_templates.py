"""Golden tests of the Ansible toolkit's volfile templates and volume model checks.

Each inventory under inventories/ is rendered with the roles' own templates (through
ansible-playbook on localhost, no hosts contacted); the result must equal the reviewed files
under tests/ansible/golden/<inventory>/, and `glusterpy volfile check` must accept every one.
Bad volume models must be refused with a message naming the volume and the problem.
Invariant: nothing here reaches the network; every subprocess has a timeout.
"""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

TOP = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
BIN = Path(sys.executable).parent
INVENTORIES = ["lab", "mail"]
PLAYBOOKS = sorted(
    [TOP / "site.yml", *(TOP / "playbooks").glob("*.yml"), HERE / "render.yml",
     HERE / "check_models.yml"]
)


def run(argv, timeout=120):
    """Run a program from the repository top and return its completed process."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(TOP / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    return subprocess.run(
        argv, cwd=TOP, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def render(inventory, out_dir):
    """Render every volfile of an inventory into out_dir/<host>/ and return the file paths."""
    proc = run([
        str(BIN / "ansible-playbook"), "-i", f"inventories/{inventory}",
        str(HERE / "render.yml"), "-e", f"render_dir={out_dir}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
    ])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(p.relative_to(out_dir) for p in Path(out_dir).rglob("*.vol"))


@pytest.fixture(scope="module", params=INVENTORIES)
def rendered(request, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp(f"render-{request.param}")
    yield request.param, out_dir, render(request.param, out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)


def test_rendered_volfiles_match_golden(rendered):
    inventory, out_dir, files = rendered
    golden_dir = GOLDEN / inventory
    expected = sorted(p.relative_to(golden_dir) for p in golden_dir.rglob("*.vol"))
    assert files == expected
    for name in files:
        assert (out_dir / name).read_text() == (golden_dir / name).read_text(), name


def test_golden_volfiles_pass_glusterpy_check(rendered):
    _, out_dir, files = rendered
    proc = run([str(BIN / "glusterpy"), "volfile", "check", *(str(out_dir / f) for f in files)])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_lab_replica_volfile_lists_every_brick(rendered):
    inventory, out_dir, _ = rendered
    if inventory != "lab":
        return
    text = (out_dir / "gp-lab2" / "gv0.vol").read_text()
    assert "subvolumes gv0-client-1 gv0-client-2 gv0-client-3" in text
    assert "option remote-host 10.231.7.13" in text


GOOD = {
    "name": "spool", "layout": "replicate", "replica": 2, "port": 24010,
    "bricks": ["a:/srv/spool", "b:/srv/spool"], "allow": ["10.0.0.*"], "mount": "/mnt/spool",
}

BAD_MODELS = [
    ({"replica": 3}, "replica 3 needs exactly 3 bricks, found 2"),
    ({"bricks": ["a:/srv/spool", "c:/srv/spool"]}, "host 'c' is not in the brick group"),
    ({"bricks": ["a:/srv/spool", "a:/srv/other"]}, "two bricks on host 'a'"),
    ({"colour": "blue"}, "unknown key 'colour'"),
    ({"layout": "stripe"}, "layout 'stripe' waits for daemon support"),
    ({"layout": "mirror"}, "unknown layout 'mirror'"),
    ({"bricks": ["a:srv/spool", "b:/srv/spool"]}, "is not of the form host:/absolute/path"),
    ({"options": {"cache-size": "1MB"}}, "option 'cache-size' names no translator"),
    ({"port": 80}, "port must be a number from 1024 to 65535"),
    ({"allow": "10.0.0.*"}, "allow must be a non-empty list"),
    ({"performance": ["turbo"]}, "unknown performance translator 'turbo'"),
]


def check_models(models, tmp_path):
    """Run the volumes role's model check over models; return one error text per model."""
    models_file = tmp_path / "models.json"
    result_file = tmp_path / "result.json"
    models_file.write_text(json.dumps(models))
    proc = run([
        str(BIN / "ansible-playbook"), str(HERE / "check_models.yml"),
        "-e", f"models_file={models_file}", "-e", f"result_file={result_file}",
        "-e", f"ansible_python_interpreter={sys.executable}",
    ])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(result_file.read_text())


def test_volume_model_checks(tmp_path):
    cases = [{"brick_hosts": ["a", "b"], "volumes": [GOOD]}]
    cases += [{"brick_hosts": ["a", "b"], "volumes": [{**GOOD, **change}]}
              for change, _ in BAD_MODELS]
    two = {**GOOD, "name": "other", "mount": "/mnt/other"}
    cases.append({"brick_hosts": ["a", "b"], "volumes": [GOOD, two]})
    results = check_models(cases, tmp_path)

    assert results[0] == ""
    for (change, message), errors in zip(BAD_MODELS, results[1:-1], strict=True):
        assert message in errors, (change, errors)
        assert errors.startswith("volume 'spool': "), errors
    assert "brick 'a:/srv/spool' overlaps brick 'a:/srv/spool' of volume 'spool'" in results[-1]
    assert "port 24010 is already used by volume 'spool'" in results[-1]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: str(p.relative_to(TOP)))
def test_playbook_syntax(playbook):
    proc = run([str(BIN / "ansible-playbook"), "--syntax-check", str(playbook)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
