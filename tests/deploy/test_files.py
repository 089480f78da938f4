"""Every file under deploy/: each YAML and JSON file parses, and none holds a secret value."""

from __future__ import annotations

import json

import pytest

from manifests import DEPLOY, files, load_yaml_docs, rel, secret_looking_tokens, secretish


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", files("*.y*ml"), ids=rel)
def test_every_yaml_file_parses(path):
    docs = load_yaml_docs(path)
    assert docs, f"{rel(path)} is empty"
    for d in docs:
        assert isinstance(d, dict), f"{rel(path)}: a document is not a mapping"


@pytest.mark.parametrize("path", files("*.json"), ids=rel)
def test_every_json_file_parses(path):
    json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# No secret values anywhere under deploy/
# --------------------------------------------------------------------------------------------

ALL_DEPLOY_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and ".tmp" not in p.parts)


@pytest.mark.parametrize("path", ALL_DEPLOY_FILES, ids=rel)
def test_no_secret_values(path):
    text = path.read_text()
    assert not secret_looking_tokens(text), f"{rel(path)}: {secret_looking_tokens(text)}"
    for marker in ("-----BEGIN", "AccountKey=", "InstrumentationKey=", "SharedAccessSignature",
                   "sig=", "client_secret", "ClientSecret"):
        assert marker not in text, f"{rel(path)} contains {marker}"
    if path.suffix in (".yaml", ".yml"):
        for d in load_yaml_docs(path):
            for env in walk_env_lists(d):
                for e in env:
                    if secretish(e.get("name", "")):
                        assert "value" not in e, f"{rel(path)}: {e['name']} has a literal value"


def walk_env_lists(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "env" and isinstance(v, list):
                yield v
            yield from walk_env_lists(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_env_lists(v)


def test_secret_scanner_catches_a_planted_key():
    """The scanner above is not vacuous."""
    planted = "apim_key = 'q7Xb2R9mZt4LwP8vNc3K6yHs1JdF5gAe'\n"
    assert secret_looking_tokens(planted)
    assert not secret_looking_tokens("image: myregistry.azurecr.io/keyward:0.1.0 vault kv-example")
