"""The Dockerfiles under deploy/docker: multi-stage onto distroless, a non-root runtime user
(keyward's not the backend's), no secret in a layer, the ports keyward listens on;
hadolint when installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from manifests import (
    ADMIN_PORT,
    BACKEND_LISTEN,
    DOCKER,
    HEALTH_API_URL,
    KEYWARD_PORT,
    ROOT,
    secretish,
)

DOCKERFILES = {"keyward": DOCKER / "keyward.Dockerfile", "mcp-backend": DOCKER / "mcp-backend.Dockerfile"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_images_run_keyward_and_the_backend_as_different_uids():
    def user(crate):
        users = [rest for word, rest in dockerfile_instructions(DOCKERFILES[crate]) if word == "USER"]
        return users[-1].split(":")[0]
    assert user("keyward") != user("mcp-backend")


@pytest.mark.parametrize("crate", DOCKERFILES)
def test_dockerfile(crate):
    path = DOCKERFILES[crate]
    ins = dockerfile_instructions(path)
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a builder and a runtime"
    assert froms[0].startswith("rust:1-bookworm AS "), froms[0]
    assert froms[1].startswith("gcr.io/distroless/cc-debian12:nonroot"), froms[1]
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert f"cargo build --release --locked -p {crate}" in runs
    # The crate exists under that name in the workspace.
    manifests = [ROOT / d / "Cargo.toml" for d in ("proxy", "mcp-backend")]
    names = [re.search(r'^name = "([^"]+)"', m.read_text(), re.M).group(1) for m in manifests]
    assert crate in names
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime user is not root"
    exposed = {int(p) for word, rest in ins if word == "EXPOSE" for p in rest.split()}
    assert exposed == ({KEYWARD_PORT, ADMIN_PORT} if crate == "keyward" else set())
    for word, rest in ins:
        if word in ("ARG", "ENV"):
            for name in re.findall(r"(\w+)=", rest) or [rest.split("=")[0].split()[0]]:
                assert not secretish(name), f"{word} {name}: no secret in a layer"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|key|env)\b|secrets?/", rest), f"{word} {rest}"
    assert ("HEALTHCHECK", "NONE") in ins, "no curl in distroless: the orchestrator's probes are the checks"
    assert "probe" in path.read_text()
    if crate == "keyward":
        assert "/livez" in path.read_text() and "/readyz" in path.read_text()
    if crate == "mcp-backend":
        env = " ".join(rest for word, rest in ins if word == "ENV")
        assert f"MCP_BACKEND_LISTEN={BACKEND_LISTEN}" in env and f"HEALTH_API_URL={HEALTH_API_URL}" in env
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.is_file()
    lines = ignore.read_text().splitlines()
    assert "*" in lines and "**/target/" in lines


@pytest.mark.parametrize("crate", DOCKERFILES)
def test_hadolint(crate):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    out = subprocess.run([hadolint, str(DOCKERFILES[crate])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
