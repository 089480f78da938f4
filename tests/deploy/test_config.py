"""Every embedded keyward.toml (the overlays', the Container Apps template as Bicep renders
it, containerapp.yaml's, each rendered ConfigMap) parses, agrees with the ports and
addresses the manifests use and, when a keyward binary is at hand, passes
``keyward check-config``."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
import warnings
from pathlib import Path

import pytest

from manifests import (
    ADMIN_PORT,
    BACKEND_LISTEN,
    EGRESS_LISTEN,
    GUID,
    K8S,
    KEYWARD_PORT,
    ROOT,
    aca_yaml_config,
    one,
    pod_spec,
    render_aca_template,
    secret_looking_tokens,
)
from render import K8S_VARIANTS, render_variant


def embedded_configs(tmp_root: Path) -> dict[str, str]:
    configs = {
        "k8s/overlays/keyvault/keyward.toml": (K8S / "overlays/keyvault/keyward.toml").read_text(),
        "k8s/overlays/secret-volume/keyward.toml": (K8S / "overlays/secret-volume/keyward.toml").read_text(),
        "aca/keyward.toml (rendered as Bicep does)": render_aca_template(["claude-desktop", "inspector"]),
        "aca/containerapp.yaml (envsubst)": aca_yaml_config(),
    }
    for variant in K8S_VARIANTS:
        docs, _ = render_variant(variant, tmp_root)
        spec = pod_spec(docs)
        cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
        configs[f"ConfigMap in {variant}"] = one(docs, "ConfigMap", cm_name)["data"]["keyward.toml"]
    return configs


CONFIG_NAMES = [
    "k8s/overlays/keyvault/keyward.toml",
    "k8s/overlays/secret-volume/keyward.toml",
    "aca/keyward.toml (rendered as Bicep does)",
    "aca/containerapp.yaml (envsubst)",
] + [f"ConfigMap in {v}" for v in K8S_VARIANTS]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_embedded_config(name, tmp_root):
    text = embedded_configs(tmp_root)[name]
    cfg = tomllib.loads(text)
    assert cfg["ingress"]["listen"] == f"0.0.0.0:{KEYWARD_PORT}"
    assert cfg["ingress"]["backend"] == f"http://{BACKEND_LISTEN}"
    clients = cfg["ingress"]["clients"]
    assert clients, "at least one client"
    for c in clients:
        assert c["secret"] == f"mcp-client-{c['id']}", c
        assert set(c) == {"id", "secret"}
    assert cfg["egress"]["listen"] == EGRESS_LISTEN
    (route,) = cfg["egress"]["routes"]
    assert route["prefix"] == "/health/"
    assert route["header"] == "Ocp-Apim-Subscription-Key"
    assert route["secret"] == "apim-subscription-key"
    assert re.match(r"^https://[a-z0-9-]+\.azure-api\.net/biotrackr/$", route["upstream"]), route["upstream"]
    assert cfg["admin"]["listen"] == f"0.0.0.0:{ADMIN_PORT}"
    sec = cfg["secrets"]
    assert sec["refresh_interval"] == "60s" and sec["rotation_overlap"] == "24h"
    if sec["source"] == "keyvault":
        assert re.match(r"^https://[a-z0-9-]+\.vault\.azure\.net/$", sec["vault_url"])
        assert sec["credential"] in ("managed_identity", "workload_identity")
        assert GUID.match(sec["client_id"])
        assert "dir" not in sec
    else:
        assert sec["source"] == "file" and sec["dir"] == "/var/run/secrets/keyward"
    tel = cfg["telemetry"]
    assert tel["log_format"] == "json" and tel["otlp_protocol"] == "grpc" and tel["service_name"] == "keyward"
    assert tel["otlp_endpoint"].startswith("http://") and tel["otlp_endpoint"].endswith(":4317")
    if "aca" in name:
        assert tel["otlp_endpoint"] == "http://127.0.0.1:4317", "the collector container of the app"
        assert sec["credential"] == "managed_identity"
        # Behind the platform's ingress every client shares its address: without this the
        # failed-key limiter would lock every client out for one attacker.
        assert "10.0.0.0/8" in cfg["ingress"]["trusted_proxies"]
    assert not secret_looking_tokens(text)


def test_aca_yaml_config_matches_the_template():
    """containerapp.yaml embeds the same configuration that Bicep renders from aca/keyward.toml."""
    bicep_cfg = tomllib.loads(render_aca_template(["claude-desktop"]))
    yaml_cfg = tomllib.loads(aca_yaml_config())
    assert yaml_cfg == bicep_cfg


def keyward_binary() -> Path | None:
    candidate = Path(os.environ.get("KEYWARD_BIN", ROOT / "target/debug/keyward"))
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


OTLP_KEYS = ("otlp_endpoint", "otlp_protocol", "service_name")


def run_check_config(binary: Path, text: str, tmp: Path) -> subprocess.CompletedProcess:
    path = tmp / "keyward.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYWARD_", "OTEL_"))}
    return subprocess.run([str(binary), "check-config", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, env=env)


def without_otlp_keys(text: str) -> str:
    return "\n".join(l for l in text.splitlines() if not l.strip().startswith(OTLP_KEYS))


@pytest.mark.skipif(keyward_binary() is None, reason="no keyward binary at target/debug/keyward (or KEYWARD_BIN)")
@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_keyward_check_config(name, tmp_root, tmp_path):
    binary = keyward_binary()
    text = embedded_configs(tmp_root)[name]
    out = run_check_config(binary, text, tmp_path)
    if out.returncode != 0 and re.search(r"telemetry\.(otlp_|service_name)", out.stderr):
        # The OTLP keys arrive with a later keyward change; check everything else now.
        warnings.warn(f"{name}: this keyward build does not know the [telemetry] OTLP keys yet")
        out = run_check_config(binary, without_otlp_keys(text), tmp_path)
    source = tomllib.loads(text)["secrets"]["source"]
    if source == "keyvault" and out.returncode == 2 and re.search(r"keyvault.*not available", out.stderr):
        # Refused only for the source: the vault check is the last one keyward makes, so the
        # rest of the file passed.
        return
    assert out.returncode == 0, f"keyward check-config refused {name}:\n{out.stderr}"
    assert "valid" in out.stdout


@pytest.mark.skipif(keyward_binary() is None, reason="no keyward binary")
def test_keyward_check_config_is_not_vacuous(tmp_path):
    """The same check refuses a broken file, so a pass above means something."""
    text = without_otlp_keys((K8S / "overlays/secret-volume/keyward.toml").read_text())
    broken = text.replace('backend = "http://127.0.0.1:8081"', 'backend = "https://example.com/mcp"')
    out = run_check_config(keyward_binary(), broken, tmp_path)
    assert out.returncode == 2 and "ingress.backend" in out.stderr
