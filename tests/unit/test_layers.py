"""The apps' import contracts (pyproject.toml, ``[tool.importlinter]``): the
job system stays installable in any project, importing nothing of the demo."""

import subprocess

from tests.support import ROOT, VENV_BIN


def test_the_import_contracts_hold():
    checked = subprocess.run(
        [str(VENV_BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr
