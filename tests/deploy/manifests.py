"""What the deploy checks share: the paths under deploy/, the ports and addresses keyward's
configuration uses, readers of manifests, the secret scanner, and the Container Apps files
as deployed (containerapp.yaml after envsubst, keyward.toml as Bicep renders it)."""

from __future__ import annotations

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
KNOWN_GUIDS = {SECRETS_USER_ROLE, ACR_PULL_ROLE, "98728c90-32c7-4049-8429-847dc0f4fe37",
               "00000000-0000-0000-0000-000000000000",
               "11111111-2222-3333-4444-555555555555"}  # SAMPLE client id below
URL = re.compile(r"https?://[^\s\"'?#]+")


def secret_looking_tokens(text: str) -> list[str]:
    """Long random-looking strings: what a pasted key, token or connection string looks like."""
    found = []
    # URL paths are not secrets (query strings still are scanned).
    for tok in TOKEN_CANDIDATE.findall(URL.sub(" ", text)):
        if GUID.match(tok) and tok.lower() in KNOWN_GUIDS:
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


def render_aca_template(clients: list[str]) -> str:
    """What modules/app.bicep does with ../keyward.toml (test_bicep.py checks the Bicep)."""
    text = (ACA / "keyward.toml").read_text()
    blocks = "\n".join(f'[[ingress.clients]]\nid = "{c}"\nsecret = "mcp-client-{c}"\n' for c in clients)
    text = text.replace("# {{CLIENTS}}", blocks)
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


def envsubst(text: str) -> str:
    """envsubst with an explicit variable list, as deploy/README.md runs it."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}",
                  lambda m: ENVSUBST_VARS.get(m.group(1), m.group(0)), text)


def aca_yaml(rendered: bool = True) -> dict:
    text = (ACA / "containerapp.yaml").read_text()
    return yaml.safe_load(envsubst(text) if rendered else text)


def aca_yaml_config() -> str:
    init = aca_yaml()["properties"]["template"]["initContainers"][0]
    return env_of(init)["KEYWARD_CONFIG_TOML"]["value"]
