"""Checks of everything under deploy/: Dockerfiles, Bicep, Container Apps YAML, azd, Kubernetes.

Nothing here deploys or builds an image: there is no Docker engine, Azure or cluster on the
machines these run on. The checks are the ones a reviewer would make by reading, made
mechanical, one module per concern: test_files.py (every file), test_kubernetes.py,
test_container_apps.py, test_bicep.py (with azd), test_dockerfiles.py, test_config.py (every
embedded keyward.toml), test_monitoring.py (dashboards and alerts) and test_metrics_ingestion.py
(keyward's metrics on Container Apps, through the collector into an Azure Monitor workspace). manifests.py holds what they share, render.py renders the Kubernetes
variants; this file, the fixtures.

Run: python3 -m venv /tmp/dv && /tmp/dv/bin/pip install -q -r tests/deploy/requirements.txt
     && /tmp/dv/bin/pytest -q tests/deploy
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The shared modules assert too: rewritten like the tests, their failures read the same.
pytest.register_assert_rewrite("manifests", "render")


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")
