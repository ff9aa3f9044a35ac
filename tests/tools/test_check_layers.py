"""The layering check (scripts/check-layers.py) on small trees made here:
it passes a clean tree and fails, naming the offender, an upward include, an
include cycle inside one layer, and a folder that is in no layer."""
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "check-layers.py")

DOC = """# How it is built

## Layers

1. `low` — the bottom.
2. `high` — on top of low.

## Something else

3. `notalayer` — a numbered line outside the section is not a layer.
"""


def tree(tmp_path, files):
    src = tmp_path / "src"
    for name, text in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    doc = tmp_path / "architecture.md"
    doc.write_text(DOC)
    return subprocess.run([sys.executable, SCRIPT, "--src", str(src), "--doc", str(doc)],
                          capture_output=True, text=True)


def test_clean_tree_passes(tmp_path):
    r = tree(tmp_path, {
        "low/a.h": "", "low/a.c": '#include "low/a.h"\n',
        "high/b.h": '#include "low/a.h"\n', "high/b.c": '#include "high/b.h"\n#include <stdio.h>\n',
    })
    assert r.returncode == 0, r.stderr
    assert "2 modules in 2 layers" in r.stdout


def test_upward_include_fails(tmp_path):
    r = tree(tmp_path, {
        "low/a.h": "", "low/a.c": '#include "low/a.h"\n#include "high/b.h"\n',
        "high/b.h": "", "high/b.c": '#include "high/b.h"\n',
    })
    assert r.returncode == 1
    assert "src/low/a includes high/b.h: layer low (1) may not include the later layer high (2)" \
        in r.stderr


def test_cycle_within_a_layer_fails(tmp_path):
    r = tree(tmp_path, {
        "low/a.h": "", "low/a.c": '#include "low/b.h"\n',
        "low/b.h": "", "low/b.c": '#include "low/c.h"\n',
        "low/c.h": '#include "low/a.h"\n', "low/c.c": "",
    })
    assert r.returncode == 1
    assert "modules include each other in a cycle: low/a low/b low/c" in r.stderr


def test_folder_outside_the_layers_fails(tmp_path):
    r = tree(tmp_path, {"low/a.c": "", "notalayer/x.c": ""})
    assert r.returncode == 1
    assert "src/notalayer/ is in no layer" in r.stderr
