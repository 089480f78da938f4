"""The keyward.toml a pod runs with: its listeners, the client, the egress route to the
stand-in, and the secrets from the state directory or the Key Vault fake."""

from __future__ import annotations

import json

from pod_state import APIM_SECRET, CLIENT_ID, CLIENT_SECRET, State


def keyward_config(
    *,
    ingress: str,
    egress: str,
    admin: str,
    backend: str,
    upstream: str,
    state: State,
    vault: dict | None = None,
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
    return f"""# Written by tests/python/pod.py for the local pod: names and places, no secret values.
[ingress]
listen = {q(ingress)}
backend = {q("http://" + backend)}
shutdown_grace = "2s"

[[ingress.clients]]
id = "{CLIENT_ID}"
secret = "{CLIENT_SECRET}"

[egress]
listen = {q(egress)}

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
