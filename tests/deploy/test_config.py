"""Every embedded keyward.toml (the overlays', the Container Apps template as Bicep renders
it, containerapp.yaml's, each rendered ConfigMap) parses, agrees with the ports and
addresses the manifests use and, when a keyward binary is at hand, passes
``keyward check-config``. Entra ID bearer tokens ([ingress.oauth], agents with token_ids)
are absent unless enabled, and right where they are."""

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
    AGENT_A,
    AGENT_B,
    AGENT_B2,
    BACKEND_LISTEN,
    EGRESS_LISTEN,
    ENTRA_APP,
    ENTRA_TENANT,
    GUID,
    K8S,
    KEYWARD_PORT,
    ROOT,
    SAMPLE_APP_FQDN,
    SAMPLE_ENTRA,
    aca_yaml_config,
    one,
    pod_spec,
    render_aca_template,
    secret_looking_tokens,
    uncomment_oauth,
)
from render import K8S_VARIANTS, render_variant


# main.bicep's Entra ID parameters with everything on: v1 tokens too, the resource derived
# from the app's FQDN, an agent with two application ids.
FULL_ENTRA = {
    **SAMPLE_ENTRA,
    "entraAcceptV1Tokens": True,
    "mcpResourceUrl": "",
    "mcpAgents": [{"id": "agent-a", "appIds": [AGENT_A]}, {"id": "agent-b", "appIds": [AGENT_B, AGENT_B2]}],
}


def embedded_configs(tmp_root: Path) -> dict[str, str]:
    configs = {
        "k8s/overlays/keyvault/keyward.toml": (K8S / "overlays/keyvault/keyward.toml").read_text(),
        "k8s/overlays/secret-volume/keyward.toml": (K8S / "overlays/secret-volume/keyward.toml").read_text(),
        "k8s/overlays/keyvault-entra/keyward.toml": (K8S / "overlays/keyvault-entra/keyward.toml").read_text(),
        "aca/keyward.toml (rendered as Bicep does)": render_aca_template(["claude-desktop", "inspector"]),
        "aca/keyward.toml (rendered as Bicep does, Entra ID)": render_aca_template(["claude-desktop"], SAMPLE_ENTRA),
        "aca/keyward.toml (rendered as Bicep does, Entra ID, v1 tokens, no keys)": render_aca_template([], FULL_ENTRA),
        "aca/containerapp.yaml (envsubst)": aca_yaml_config(),
        "aca/containerapp.yaml (envsubst, Entra ID block enabled)": aca_yaml_config(entra=True),
    }
    for variant in K8S_VARIANTS:
        docs, _ = render_variant(variant, tmp_root)
        spec = pod_spec(docs)
        cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
        configs[f"ConfigMap in {variant}"] = one(docs, "ConfigMap", cm_name)["data"]["keyward.toml"]
    return configs


# The configurations with Entra ID enabled, and what each must say: the resource, whether v1
# tokens are accepted, the agents and their application ids, the clients with keys.
ENTRA_CONFIGS = {
    "k8s/overlays/keyvault-entra/keyward.toml":
        ("https://mcp.example.com/mcp", False, {"agent-a": [AGENT_A]}, ["claude-desktop"]),
    "ConfigMap in keyvault-entra":
        ("https://mcp.example.com/mcp", False, {"agent-a": [AGENT_A]}, ["claude-desktop"]),
    "aca/keyward.toml (rendered as Bicep does, Entra ID)":
        ("https://mcp.example.com/mcp", False, {"agent-a": [AGENT_A]}, ["claude-desktop"]),
    "aca/keyward.toml (rendered as Bicep does, Entra ID, v1 tokens, no keys)":
        (f"https://{SAMPLE_APP_FQDN}/mcp", True, {"agent-a": [AGENT_A], "agent-b": [AGENT_B, AGENT_B2]}, []),
    "aca/containerapp.yaml (envsubst, Entra ID block enabled)":
        ("https://mcp.example.com/mcp", False, {"agent-a": [AGENT_A]}, ["claude-desktop"]),
}

CONFIG_NAMES = [
    "k8s/overlays/keyvault/keyward.toml",
    "k8s/overlays/secret-volume/keyward.toml",
    "aca/keyward.toml (rendered as Bicep does)",
    "aca/containerapp.yaml (envsubst)",
] + [f"ConfigMap in {v}" for v in K8S_VARIANTS if v != "keyvault-entra"]
ALL_CONFIG_NAMES = CONFIG_NAMES + list(ENTRA_CONFIGS)


@pytest.mark.parametrize("name", ALL_CONFIG_NAMES)
def test_embedded_config(name, tmp_root):
    text = embedded_configs(tmp_root)[name]
    cfg = tomllib.loads(text)
    assert cfg["ingress"]["listen"] == f"0.0.0.0:{KEYWARD_PORT}"
    assert cfg["ingress"]["backend"] == f"http://{BACKEND_LISTEN}"
    clients = cfg["ingress"]["clients"]
    assert clients, "at least one client"
    for c in clients:
        assert set(c) <= {"id", "secret", "token_ids"} and ("secret" in c or c.get("token_ids")), c
        if "secret" in c:
            assert c["secret"] == f"mcp-client-{c['id']}", c
    assert len({c["id"] for c in clients}) == len(clients), "client ids are unique"
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
    """containerapp.yaml embeds the same configuration that Bicep renders from aca/keyward.toml,
    and with its Entra ID block enabled the same one Bicep renders with Entra ID."""
    bicep_cfg = tomllib.loads(render_aca_template(["claude-desktop"]))
    yaml_cfg = tomllib.loads(aca_yaml_config())
    assert yaml_cfg == bicep_cfg
    assert tomllib.loads(aca_yaml_config(entra=True)) == tomllib.loads(
        render_aca_template(["claude-desktop"], SAMPLE_ENTRA))


# --------------------------------------------------------------------------------------------
# Entra ID bearer tokens
# --------------------------------------------------------------------------------------------

V2_ISSUER = f"https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0"
V1_ISSUER = f"https://sts.windows.net/{ENTRA_TENANT}/"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_oauth_absent_by_default(name, tmp_root):
    """Without the Entra ID inputs every configuration is keys only, as before."""
    ingress = tomllib.loads(embedded_configs(tmp_root)[name])["ingress"]
    assert "oauth" not in ingress and "resource_metadata" not in ingress
    for c in ingress["clients"]:
        assert "token_ids" not in c and "secret" in c, c


def test_entra_inputs_without_app_id_uri_render_nothing():
    """Agents and the other Entra ID parameters do nothing while entraAppIdUri is empty."""
    off = {**FULL_ENTRA, "entraAppIdUri": ""}
    assert render_aca_template(["claude-desktop"], off) == render_aca_template(["claude-desktop"])


@pytest.mark.parametrize("name", ENTRA_CONFIGS)
def test_oauth_when_enabled(name, tmp_root):
    resource, v1, agents, key_clients = ENTRA_CONFIGS[name]
    cfg = tomllib.loads(embedded_configs(tmp_root)[name])
    oauth = cfg["ingress"]["oauth"]
    assert oauth["resource"] == resource
    assert oauth["scopes"] == [f"api://{ENTRA_APP}/mcp.tools"]
    issuers = {i["issuer"]: i for i in oauth["issuers"]}
    assert set(issuers) == ({V2_ISSUER, V1_ISSUER} if v1 else {V2_ISSUER})
    for issuer in issuers.values():
        # v1 tokens carry the app ID URI they were requested for, v2 tokens the client id.
        assert issuer["audiences"] == [f"api://{ENTRA_APP}", ENTRA_APP]
        assert issuer["required_scopes"] == ["mcp.tools"]
    assert "jwks_uri" not in issuers[V2_ISSUER], "v2: the keys come from the issuer's discovery"
    if v1:
        assert issuers[V1_ISSUER]["jwks_uri"] == f"https://login.microsoftonline.com/{ENTRA_TENANT}/discovery/keys"
    clients = cfg["ingress"]["clients"]
    assert {c["id"]: c["token_ids"] for c in clients if "token_ids" in c} == agents
    for c in clients:
        assert ("secret" in c) != ("token_ids" in c), f"{c['id']}: a key client or an agent"
    assert [c["id"] for c in clients if "secret" in c] == key_clients
    token_ids = [t for c in clients for t in c.get("token_ids", [])]
    assert len(set(token_ids)) == len(token_ids), "an agent id belongs to one client"
    assert all(GUID.match(t) for t in token_ids), "token ids are application (client) ids"


COMMENTED_OAUTH = {
    "k8s/overlays/keyvault/keyward.toml": lambda: (K8S / "overlays/keyvault/keyward.toml").read_text(),
    "k8s/overlays/secret-volume/keyward.toml": lambda: (K8S / "overlays/secret-volume/keyward.toml").read_text(),
    "aca/containerapp.yaml": aca_yaml_config,
}


@pytest.mark.parametrize("name", COMMENTED_OAUTH)
def test_commented_oauth_block_enables_cleanly(name):
    """The commented [ingress.oauth] block, uncommented as it stands, is valid TOML in the
    right place and has the shape the enabled configurations have."""
    cfg = tomllib.loads(uncomment_oauth(COMMENTED_OAUTH[name]()))
    oauth = cfg["ingress"]["oauth"]
    assert set(oauth) == {"resource", "scopes", "issuers"}
    (issuer,) = oauth["issuers"]
    assert set(issuer) == {"issuer", "audiences", "required_scopes"}
    assert issuer["issuer"].startswith("https://login.microsoftonline.com/") and issuer["issuer"].endswith("/v2.0")
    assert issuer["required_scopes"] == ["mcp.tools"] and len(issuer["audiences"]) == 2
    agents = [c for c in cfg["ingress"]["clients"] if "token_ids" in c]
    assert [c["id"] for c in agents] == ["agent-a"] and "secret" not in agents[0]
    assert cfg["egress"]["listen"] == EGRESS_LISTEN, "the block ends before [egress]"


def without_entra(cfg: dict) -> dict:
    ingress = {k: v for k, v in cfg["ingress"].items() if k != "oauth"}
    ingress["clients"] = [c for c in ingress["clients"] if "token_ids" not in c]
    return {**cfg, "ingress": ingress}


def test_entra_overlay_config_is_the_keyvault_one_plus_oauth():
    """overlays/keyvault-entra replaces the keyvault overlay's keyward.toml whole; the two
    stay alike apart from Entra ID."""
    keyvault = tomllib.loads((K8S / "overlays/keyvault/keyward.toml").read_text())
    entra = tomllib.loads((K8S / "overlays/keyvault-entra/keyward.toml").read_text())
    assert "oauth" in entra["ingress"]
    assert without_entra(entra) == keyvault


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


# A keyward build from before bearer tokens refuses [ingress.oauth] and token_ids by name.
OAUTH_UNKNOWN = re.compile(r"unknown field `(oauth|token_ids)`")


@pytest.mark.skipif(keyward_binary() is None, reason="no keyward binary at target/debug/keyward (or KEYWARD_BIN)")
@pytest.mark.parametrize("name", ALL_CONFIG_NAMES)
def test_keyward_check_config(name, tmp_root, tmp_path):
    binary = keyward_binary()
    text = embedded_configs(tmp_root)[name]
    out = run_check_config(binary, text, tmp_path)
    if out.returncode != 0 and re.search(r"telemetry\.(otlp_|service_name)", out.stderr):
        # The OTLP keys arrive with a later keyward change; check everything else now.
        warnings.warn(f"{name}: this keyward build does not know the [telemetry] OTLP keys yet")
        out = run_check_config(binary, without_otlp_keys(text), tmp_path)
    if name in ENTRA_CONFIGS and out.returncode != 0 and OAUTH_UNKNOWN.search(out.stderr):
        # Skipped only while the binary predates bearer tokens; it runs by itself once the
        # binary knows them. DEPLOY_TESTS_REQUIRE_OAUTH=1 makes this a failure instead.
        message = f"{name}: this keyward build does not know [ingress.oauth] / token_ids yet"
        if os.environ.get("DEPLOY_TESTS_REQUIRE_OAUTH") == "1":
            pytest.fail(f"{message}:\n{out.stderr}")
        pytest.skip(message)
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


@pytest.mark.skipif(keyward_binary() is None, reason="no keyward binary")
def test_keyward_check_config_refuses_a_broken_oauth_section(tmp_path):
    """A pass of an Entra ID configuration above means something: the same check refuses an
    issuer that is not https."""
    text = (K8S / "overlays/keyvault-entra/keyward.toml").read_text()
    broken = text.replace('issuer = "https://login.microsoftonline.com/', 'issuer = "http://login.microsoftonline.com/')
    assert broken != text
    out = run_check_config(keyward_binary(), broken, tmp_path)
    if OAUTH_UNKNOWN.search(out.stderr) and os.environ.get("DEPLOY_TESTS_REQUIRE_OAUTH") != "1":
        pytest.skip("this keyward build does not know [ingress.oauth] yet")
    assert out.returncode == 2 and "ingress.oauth.issuers" in out.stderr, out.stderr
