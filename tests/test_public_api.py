from __future__ import annotations

import subprocess
import sys

import protege


def test_every_public_name_resolves():
    assert sorted(set(protege.__all__) - {"__version__"}) == sorted(protege._LAZY)
    for name in protege.__all__:
        assert getattr(protege, name) is not None, name


def test_import_protege_and_cli_start_without_heavy_libraries():
    code = (
        "import sys, protege, protege.cli.main, protege.gateway.app; "
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'sentence_transformers', 'spacy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
