"""Runs the tests that need Gymnasium under each vendored version (1.3.0, and 0.29.1, the last 0.x, which many
libraries still require), each in a pytest process of its own: one process imports one Gymnasium.

The vendored sources live beside the repository (``../shared/vendor/python``, see ``../shared/vendor/README.md``);
without them these tests skip, saying so.
"""

from __future__ import annotations

import re

import pytest

from conftest import GYMNASIUM_VERSIONS, run_pytest_under_gymnasium

# The files run under each Gymnasium: their tests that need it get it (conftest.import_gymnasium), the others check
# that they work with gymnasium.spaces too.
GYMNASIUM_TEST_FILES = ["test_gymnasium_compat.py", "test_pickle.py", "test_vector_gymnasium.py",
                        "test_sb3_adapter.py"]


@pytest.mark.parametrize("version", GYMNASIUM_VERSIONS)
def test_under_vendored_gymnasium(version, server):
    result = run_pytest_under_gymnasium(version, server, GYMNASIUM_TEST_FILES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"Gymnasium {version}:\n{output[-12000:]}"
    summary = output.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0 and "failed" not in summary and "error" not in summary, output[-4000:]
    print(f"Gymnasium {version}: {summary}")
