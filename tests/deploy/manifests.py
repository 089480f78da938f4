"""What the deploy checks share: the paths under deploy/, the ports and addresses keyward's
configuration uses, readers of manifests, the secret scanner, and the Container Apps files
as deployed (containerapp.yaml after envsubst, keyward.toml as Bicep renders it, with and
without Entra ID)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ACA = DEPLOY / "aca"
DOCKER = DEPLOY / "docker"

KEYWARD_PORT = 8080
ADMIN_PORT = 9090
BACKEND_LISTEN = "127.0.0.1:8081"
EGRESS_LISTEN = "127.0.0.1:8090"
HEALTH_API_URL = "http://127.0.0.1:8090/health/"

SECRETS_USER_ROLE = "4633458b-17de-408a-b874-0445c86b69e6"
ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
METRICS_PUBLISHER_ROLE = "3913510d-42f4-4e42-8a64-420c390055eb"  # Monitoring Metrics Publisher

SECRET_WORDS = {"key", "keys", "secret", "secrets", "token", "tokens", "password", "passwd", "pwd",
                "credential", "credentials", "sas", "apikey"}


def secretish(name: str) -> bool:
    """Whether a name (env var, parameter) reads like it holds a credential: API_KEY, clientSecret,
    APPLICATIONINSIGHTS_CONNECTION_STRING; not KEYWARD_CONFIG."""
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]
    joined = " ".join(words)
    if words and words[-1] in ("name", "names", "id", "uri", "url", "ref", "expiry"):
        return False  # a reference to a secret, not its value
    return bool(SECRET_WORDS & set(words)) or "connection string" in joined


# --------------------------------------------------------------------------------------------
# Reading manifests
# --------------------------------------------------------------------------------------------


def files(pattern: str, under: Path = DEPLOY) -> list[Path]:
    return sorted(p for p in under.rglob(pattern) if ".tmp" not in p.parts)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "keyward")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec.get("containers", [])


def container(spec: dict, name: str) -> dict:
    found = [c for c in all_containers(spec) if c["name"] == name]
    assert len(found) == 1, f"container {name}: found {len(found)}"
    return found[0]


def env_of(c: dict) -> dict:
    return {e["name"]: e for e in c.get("env", [])}


# --------------------------------------------------------------------------------------------
# Secret scanning
# --------------------------------------------------------------------------------------------


def shannon_entropy(s: str) -> float:
    counts = Counter(s)
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
TOKEN_CANDIDATE = re.compile(r"[A-Za-z0-9+/=_\-]{32,}")
# Entra ID placeholders (overlays/keyvault-entra, containerapp.yaml, SAMPLE_ENTRA below): a
# tenant, the MCP server's app registration, agents' application ids; and the Azure CLI's
# well-known client id, which the README names for delegated test tokens.
ENTRA_TENANT = "00000000-0000-0000-0000-0000000000a1"
ENTRA_APP = "00000000-0000-0000-0000-0000000000b1"
AGENT_A = "00000000-0000-0000-0000-0000000000c1"
AGENT_B = "00000000-0000-0000-0000-0000000000c2"
AGENT_B2 = "00000000-0000-0000-0000-0000000000c3"
AZURE_CLI_APP = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
KNOWN_GUIDS = {SECRETS_USER_ROLE, ACR_PULL_ROLE, METRICS_PUBLISHER_ROLE, "98728c90-32c7-4049-8429-847dc0f4fe37",
               "00000000-0000-0000-0000-000000000000",
               "11111111-2222-3333-4444-555555555555",  # SAMPLE client id below
               ENTRA_TENANT, ENTRA_APP, AGENT_A, AGENT_B, AGENT_B2, AZURE_CLI_APP}
URL = re.compile(r"https?://[^\s\"'?#]+")
# Fixed paths that look random to the scanner: Azure Monitor's Prometheus ingestion stream,
# which follows a placeholder (<endpoint>/dataCollectionRules/<id>) or a Bicep interpolation.
KNOWN_TOKENS = {"/streams/Microsoft-PrometheusMetrics/api/v1/write"}


def secret_looking_tokens(text: str) -> list[str]:
    """Long random-looking strings: what a pasted key, token or connection string looks like."""
    found = []
    # URL paths are not secrets (query strings still are scanned).
    for tok in TOKEN_CANDIDATE.findall(URL.sub(" ", text)):
        if GUID.match(tok) and tok.lower() in KNOWN_GUIDS or tok in KNOWN_TOKENS:
            continue
        if GUID.match(tok):
            found.append(tok)  # an unknown GUID may be a tenant, subscription or key
            continue
        has_digit = any(ch.isdigit() for ch in tok)
        mixed = any(ch.islower() for ch in tok) and any(ch.isupper() for ch in tok)
        if shannon_entropy(tok) > 4.0 and has_digit and (mixed or "+" in tok or "/" in tok):
            found.append(tok)
    return found


# --------------------------------------------------------------------------------------------
# Container Apps, rendered
# --------------------------------------------------------------------------------------------

SAMPLE = {
    "vault": "https://kv-sample.vault.azure.net/",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "upstream": "https://apim-sample.azure-api.net/biotrackr/",
}


# main.bicep's Entra ID parameters, as a deployment would set them (mcpResourceUrl given).
SAMPLE_ENTRA = {
    "entraTenantId": ENTRA_TENANT,
    "entraAppIdUri": f"api://{ENTRA_APP}",
    "entraAppClientId": ENTRA_APP,
    "entraRequiredScopes": ["mcp.tools"],
    "entraAcceptV1Tokens": False,
    "mcpResourceUrl": "https://mcp.example.com/mcp",
    "mcpAgents": [{"id": "agent-a", "appIds": [AGENT_A]}],
}
# The app's FQDN as the template derives it when mcpResourceUrl is empty.
SAMPLE_APP_FQDN = "ca-keyward-sample.nicebeach-12345678.westeurope.azurecontainerapps.io"


def bicep_string(value) -> str:
    """ARM's string() of an array of strings: compact JSON, which TOML reads as an array."""
    return json.dumps(value, separators=(",", ":"))


def render_oauth(p: dict) -> str:
    """What modules/app.bicep renders for '# {{OAUTH}}' (test_bicep.py checks the Bicep)."""
    if not p["entraAppIdUri"]:
        return ""
    tenant = p["entraTenantId"]
    resource = p["mcpResourceUrl"] or f"https://{SAMPLE_APP_FQDN}/mcp"
    audiences = [a for a in (p["entraAppIdUri"], p["entraAppClientId"]) if a]
    required = p["entraRequiredScopes"]
    scopes = [f"{p['entraAppIdUri']}/{s}" for s in required]
    scopes_toml = f"scopes = {bicep_string(scopes)}\n" if required else ""
    required_toml = f"required_scopes = {bicep_string(required)}\n" if required else ""
    v2 = (f'[[ingress.oauth.issuers]]\nissuer = "https://login.microsoftonline.com/{tenant}/v2.0"\n'
          f"audiences = {bicep_string(audiences)}\n{required_toml}")
    v1 = (f'\n[[ingress.oauth.issuers]]\nissuer = "https://sts.windows.net/{tenant}/"\n'
          f'jwks_uri = "https://login.microsoftonline.com/{tenant}/discovery/keys"\n'
          f"audiences = {bicep_string(audiences)}\n{required_toml}") if p["entraAcceptV1Tokens"] else ""
    agents = "\n".join(f'[[ingress.clients]]\nid = "{a["id"]}"\ntoken_ids = {bicep_string(a["appIds"])}\n'
                       for a in p["mcpAgents"])
    return f'[ingress.oauth]\nresource = "{resource}"\n{scopes_toml}\n{v2}{v1}\n{agents}'


def render_aca_template(clients: list[str], entra: dict | None = None) -> str:
    """What modules/app.bicep does with ../keyward.toml (test_bicep.py checks the Bicep);
    `entra`: main.bicep's Entra ID parameters (SAMPLE_ENTRA), None for their defaults."""
    text = (ACA / "keyward.toml").read_text()
    blocks = "\n".join(f'[[ingress.clients]]\nid = "{c}"\nsecret = "mcp-client-{c}"\n' for c in clients)
    text = text.replace("# {{CLIENTS}}", blocks)
    text = text.replace("# {{OAUTH}}", render_oauth(entra or {"entraAppIdUri": ""}))
    text = text.replace("{{APIM_UPSTREAM}}", SAMPLE["upstream"])
    text = text.replace("{{VAULT_URL}}", SAMPLE["vault"])
    return text.replace("{{IDENTITY_CLIENT_ID}}", SAMPLE["client_id"])


ENVSUBST_VARS = {
    "AZURE_LOCATION": "westeurope",
    "KEYWARD_ENVIRONMENT_ID": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.App/managedEnvironments/cae",
    "KEYWARD_IDENTITY_ID": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id",
    "KEYWARD_IDENTITY_CLIENT_ID": SAMPLE["client_id"],
    "AZURE_CONTAINER_REGISTRY_ENDPOINT": "crsample.azurecr.io",
    "AZURE_KEY_VAULT_ENDPOINT": SAMPLE["vault"],
    "KEYWARD_APIM_UPSTREAM": SAMPLE["upstream"],
    "KEYWARD_IMAGE": "crsample.azurecr.io/keyward:git-0123456789ab",
    "MCP_BACKEND_IMAGE": "crsample.azurecr.io/mcp-backend:git-0123456789ab",
}


# The four more that containerapp.yaml's header names for Entra ID.
ENTRA_ENVSUBST_VARS = {
    "KEYWARD_ENTRA_TENANT_ID": SAMPLE_ENTRA["entraTenantId"],
    "KEYWARD_ENTRA_APP_ID_URI": SAMPLE_ENTRA["entraAppIdUri"],
    "KEYWARD_ENTRA_APP_CLIENT_ID": SAMPLE_ENTRA["entraAppClientId"],
    "KEYWARD_MCP_RESOURCE_URL": SAMPLE_ENTRA["mcpResourceUrl"],
}


def envsubst(text: str, variables: dict | None = None) -> str:
    """envsubst with an explicit variable list, as deploy/README.md runs it."""
    variables = ENVSUBST_VARS if variables is None else variables
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}",
                  lambda m: variables.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------------------------
# The collector's configuration, as the collector resolves it
# --------------------------------------------------------------------------------------------

COLLECTOR_CONFIG = ACA / "otel-collector.yaml"
COLLECTOR_REMOTE_WRITE = ACA / "otel-collector.remote-write.yaml"


def merge_collector_configs(base: dict, overlay: dict) -> dict:
    """Two --config sources as the collector merges them: mappings key by key, anything else
    (lists included) replaced by the later source."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_collector_configs(merged[key], value)
        else:
            merged[key] = value
    return merged


def collector_config(workspace: bool = False) -> dict:
    """The collector's effective configuration: otel-collector.yaml, and with an Azure Monitor
    workspace otel-collector.remote-write.yaml merged over it (modules/app.bicep)."""
    cfg = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    if workspace:
        cfg = merge_collector_configs(cfg, yaml.safe_load(COLLECTOR_REMOTE_WRITE.read_text()))
    return cfg


def component_type(component_id: str) -> str:
    """`prometheus_remote_write/azure-monitor` -> `prometheus_remote_write`."""
    return component_id.split("/", 1)[0]


def aca_yaml(rendered: bool = True, entra: bool = False) -> dict:
    text = (ACA / "containerapp.yaml").read_text()
    if not rendered:
        return yaml.safe_load(text)
    return yaml.safe_load(envsubst(text, {**ENVSUBST_VARS, **ENTRA_ENVSUBST_VARS} if entra else None))


def aca_yaml_config(entra: bool = False) -> str:
    """keyward.toml as containerapp.yaml embeds it; `entra`: with its [ingress.oauth] block
    uncommented and the Entra ID variables substituted too."""
    init = aca_yaml(entra=entra)["properties"]["template"]["initContainers"][0]
    text = env_of(init)["KEYWARD_CONFIG_TOML"]["value"]
    return uncomment_oauth(text) if entra else text


def commented_oauth_block(text: str) -> tuple[int, int]:
    """(first, end) line indexes of the commented-out block that starts at '# [ingress.oauth]'
    and runs to the first line that is not a comment."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "# [ingress.oauth]"]
    assert len(starts) == 1, f"expected one commented [ingress.oauth] block, found {len(starts)}"
    end = starts[0]
    while end < len(lines) and lines[end].lstrip().startswith("#"):
        end += 1
    return starts[0], end


def uncomment_oauth(text: str) -> str:
    """The text with its commented [ingress.oauth] block enabled, as an operator would."""
    lines = text.splitlines()
    first, end = commented_oauth_block(text)
    for i in range(first, end):
        lines[i] = re.sub(r"^(\s*)# ?", r"\1", lines[i])
    return "\n".join(lines) + "\n"
