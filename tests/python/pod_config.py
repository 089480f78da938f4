"""The keyward.toml a pod runs with: its listeners, the client, the egress route to the
stand-in, and the secrets from the state directory or the Key Vault fake; with `oauth`, bearer
tokens from one issuer beside the API key, and the clients known by their tokens; with
`clients`, more API-key clients and what each may reach; with `session_secret`, the secret that
binds MCP sessions to their client; with `ingress_safety_net`/`egress_safety_net`, what a known
secret in a response meets on that listener ("redact", "block", "off"; keyward's default,
redact, when None)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pod_state import APIM_SECRET, CLIENT_ID, CLIENT_SECRET, State


@dataclass(frozen=True)
class OAuth:
    """`[ingress.oauth]` with one issuer, and the clients its tokens name. The resource is the
    pod's own MCP URL, `http://<ingress>/mcp`, so the ingress needs its port before keyward
    starts."""

    issuer: str
    ca_file: Path
    audiences: tuple[str, ...]
    # (client id, its token ids): `[[ingress.clients]]` known by token only, no secret.
    token_clients: tuple[tuple[str, tuple[str, ...]], ...]
    scopes: tuple[str, ...] = ()
    required_scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Client:
    """One more API-key client, `[[ingress.clients]]` after the pod's own: its id, the secret
    holding its key (the pod makes it when missing) and its grants, each a tuple of names (URIs
    for resources) and `*` globs; None (the default) leaves the key out, so every one of that
    kind is granted, and () grants none."""

    id: str
    secret: str
    tools: tuple[str, ...] | None = None
    resources: tuple[str, ...] | None = None
    prompts: tuple[str, ...] | None = None


def _q(value) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(value))


def _list(values) -> str:
    return "[" + ", ".join(_q(v) for v in values) + "]"


def client_config(client: Client) -> str:
    """One `[[ingress.clients]]` table with a key and its grants."""
    grants = "".join(
        f"{kind} = {_list(values)}\n"
        for kind, values in (
            ("tools", client.tools), ("resources", client.resources), ("prompts", client.prompts)
        )
        if values is not None
    )
    return f"[[ingress.clients]]\nid = {_q(client.id)}\nsecret = {_q(client.secret)}\n{grants}\n"


def resource_url(ingress: str) -> str:
    """The resource an OAuth pod names: its MCP endpoint's URL."""
    return f"http://{ingress}/mcp"


def oauth_config(oauth: OAuth, *, ingress: str) -> str:
    """The token clients and `[ingress.oauth]`, to follow the API-key client in `[ingress]`."""
    if ingress.endswith(":0"):
        raise ValueError("an OAuth pod's resource names the ingress port: pick it first")
    clients = "".join(
        f"[[ingress.clients]]\nid = {_q(client)}\ntoken_ids = {_list(ids)}\n\n"
        for client, ids in oauth.token_clients
    )
    required = (
        f"required_scopes = {_list(oauth.required_scopes)}\n" if oauth.required_scopes else ""
    )
    return f"""{clients}[ingress.oauth]
resource = {_q(resource_url(ingress))}
scopes = {_list(oauth.scopes)}

[[ingress.oauth.issuers]]
issuer = {_q(oauth.issuer)}
audiences = {_list(oauth.audiences)}
ca_file = {_q(oauth.ca_file)}
{required}
"""


def keyward_config(
    *,
    ingress: str,
    egress: str,
    admin: str,
    backend: str,
    upstream: str,
    state: State,
    vault: dict | None = None,
    oauth: OAuth | None = None,
    clients: tuple[Client, ...] = (),
    session_secret: str | None = None,
    ingress_safety_net: str | None = None,
    egress_safety_net: str | None = None,
) -> str:
    def q(value) -> str:
        """A TOML basic string (JSON's escapes are TOML's)."""
        return json.dumps(str(value))

    if vault is None:
        source = f'source = "file"\ndir = {q(state.secrets_dir)}\nwatch_interval = "1s"\n'
    else:
        source = (
            'source = "keyvault"\n'
            f'vault_url = {q(vault["vault_url"])}\n'
            'vault_address = "127.0.0.1"\n'
            f'ca_file = {q(vault["ca_file"])}\n'
            'credential = "managed_identity"\n'
            'refresh_interval = "5s"\n'
        )
    session = f"session_secret = {q(session_secret)}\n" if session_secret else ""
    ingress_net = f"safety_net = {q(ingress_safety_net)}\n" if ingress_safety_net else ""
    egress_net = f"safety_net = {q(egress_safety_net)}\n" if egress_safety_net else ""
    more_clients = "".join(client_config(client) for client in clients)
    return f"""# Written by tests/python/pod.py for the local pod: names and places, no secret values.
[ingress]
listen = {q(ingress)}
backend = {q("http://" + backend)}
shutdown_grace = "2s"
{session}{ingress_net}
[[ingress.clients]]
id = "{CLIENT_ID}"
secret = "{CLIENT_SECRET}"

{more_clients}{oauth_config(oauth, ingress=ingress) if oauth else ""}[egress]
listen = {q(egress)}
{egress_net}
[[egress.routes]]
prefix = "/health/"
upstream = {q("http://" + upstream + "/biotrackr/")}
header = "Ocp-Apim-Subscription-Key"
secret = "{APIM_SECRET}"
timeout = "10s"

[admin]
listen = {q(admin)}

[secrets]
{source}
[telemetry]
log_format = "json"
"""
