"""The Bicep under deploy/aca, read (and compiled where a compiler exists): modules and
params agree, no secret parameters, least-privilege role assignments, vault protection,
one exposed port, the Entra ID inputs wired to the rendered configuration (and no app
registration in the template); and azd's azure.yaml with its postprovision hook."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from manifests import (
    ACA,
    ACR_PULL_ROLE,
    AGENT_B,
    AGENT_B2,
    DEPLOY,
    HEALTH_API_URL,
    METRICS_PUBLISHER_ROLE,
    ROOT,
    SAMPLE_ENTRA,
    SECRETS_USER_ROLE,
    files,
    rel,
    render_oauth,
    secretish,
)

FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "f25e0fa2-a7c8-4377-a976-54943a77a395": "Key Vault Contributor",
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603": "Key Vault Crypto Officer",
}


# --------------------------------------------------------------------------------------------
# Bicep (no compiler here: read it)
# --------------------------------------------------------------------------------------------

BICEP_FILES = files("*.bicep", ACA)


def bicep_text() -> str:
    return "\n".join(p.read_text() for p in BICEP_FILES)


def mask_bicep(text: str) -> str:
    """Bicep with comments and string contents replaced by spaces (same length, same lines), so
    that braces and keywords can be counted and found by offset."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            while i < n and text[i] != "\n":
                out[i] = " "
                i += 1
        elif text.startswith("/*", i):
            end = text.index("*/", i) + 2
            for j in range(i, end):
                out[j] = out[j] if text[j] == "\n" else " "
            i = end
        elif text[i] == "'":
            i += 1
            while i < n and text[i] != "'":
                skip = 2 if text[i] == "\\" else 1
                for j in range(i, min(i + skip, n)):
                    out[j] = " "
                i += skip
            i += 1
        else:
            i += 1
    return "".join(out)


def block_after(text: str, start: int) -> str:
    """The {...} block that opens at or after `start` (braces balanced, strings ignored)."""
    code = mask_bicep(text)
    open_at = code.index("{", start)
    depth = 0
    for i in range(open_at, len(code)):
        if code[i] == "{":
            depth += 1
        elif code[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at:i + 1]
    raise AssertionError("unbalanced braces")


def resources(text: str, type_prefix: str) -> list[str]:
    blocks = []
    for m in re.finditer(r"^resource \w+ '([^'@]+)@[^']+'(?: existing)? = (?:if \([^\n]*\) )?", text, re.M):
        if m.group(1) == type_prefix and " existing " not in m.group(0):
            blocks.append(block_after(text, m.end()))
    return blocks


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_bicep_is_balanced_and_modules_exist(path):
    code = mask_bicep(path.read_text())
    for open_, close in ("{}", "[]", "()"):
        depth = 0
        for i, ch in enumerate(code):
            depth += (ch == open_) - (ch == close)
            assert depth >= 0, f"{rel(path)}: unbalanced {close} at offset {i}"
        assert depth == 0, f"{rel(path)}: unbalanced {open_}{close}"
    for m in re.finditer(r"^module \w+ '([^']+)'", path.read_text(), re.M):
        assert (path.parent / m.group(1)).is_file(), f"{rel(path)}: module {m.group(1)} missing"
    for m in re.finditer(r"load(?:Text|Json|Yaml)Content\('([^']+)'\)", path.read_text()):
        assert (path.parent / m.group(1)).is_file(), f"{rel(path)}: {m.group(1)} missing"


def module_params(path: Path) -> tuple[set[str], set[str]]:
    """(all params, params without a default) of a Bicep file."""
    all_, required = set(), set()
    for m in re.finditer(r"^param (\w+) [\w.]+(\s*=)?", path.read_text(), re.M):
        all_.add(m.group(1))
        if not m.group(2):
            required.add(m.group(1))
    return all_, required


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_bicep_module_calls_pass_the_right_params(path):
    """main.bicep's modules, and the modules' own (metrics-ingestion.bicep calls one, which
    calls another)."""
    text = path.read_text()
    for m in re.finditer(r"^module (\w+) '([^']+)' = (?:if \([^\n]*\) )?", text, re.M):
        body = block_after(text, m.end())
        params_at = body.index("params:")
        params = block_after(body, params_at)
        passed = set(re.findall(r"^\s{4}(\w+):", params, re.M))
        declared, required = module_params(path.parent / m.group(2))
        assert passed <= declared, f"module {m.group(1)}: unknown params {passed - declared}"
        assert required <= passed, f"module {m.group(1)}: missing params {required - passed}"
    # Module outputs used here exist.
    for m in re.finditer(r"\b(\w+)\.outputs\.(\w+)", text):
        mod = re.search(rf"^module {m.group(1)} '([^']+)'", text, re.M)
        assert mod, f"{m.group(1)} is not a module"
        outputs = re.findall(r"^output (\w+) ", (path.parent / mod.group(1)).read_text(), re.M)
        assert m.group(2) in outputs, f"{m.group(1)} has no output {m.group(2)}"


def test_parameters_file_matches_main():
    params = json.loads((ACA / "main.parameters.json").read_text())["parameters"]
    declared, required = module_params(ACA / "main.bicep")
    assert set(params) <= declared, set(params) - declared
    assert required <= set(params), f"azd would prompt for {required - set(params)}"
    for name, spec in params.items():
        assert set(spec) == {"value"}, f"{name}: only plain values (no Key Vault references needed)"
        main_params = {n: (t, d) for n, t, d in bicep_params((ACA / "main.bicep").read_text())}
        type_, decorators = main_params[name]
        assert not (type_ == "string" and "@allowed" not in decorators and secretish(name)), (
            f"parameter {name} looks like a secret")


def bicep_params(text: str) -> list[tuple[str, str, str]]:
    """(name, type, decorators) of every param, decorators being the lines just above it."""
    out, pending = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("@") or (pending and not stripped.startswith("param ") and stripped
                                         and not stripped.startswith("//")):
            pending.append(stripped)
            continue
        m = re.match(r"param (\w+) ([\w.]+)", stripped)
        if m:
            out.append((m.group(1), m.group(2), "\n".join(pending)))
        if not stripped.startswith("//"):
            pending = []
    return out


def test_bicep_no_secret_parameters_or_listkeys():
    text = bicep_text()
    assert "@secure()" not in text, "no parameter may carry a secret value"
    for name, type_, decorators in bicep_params(text):
        if type_ in ("string", "object", "array") and "@allowed" not in decorators:
            assert not secretish(name), f"parameter {name} ({type_}) looks like it carries a secret"
    for fn in ("listKeys(", "listSecrets(", "listCredentials(", "listConnectionStrings("):
        assert fn not in text, f"{fn} puts a key into the deployment"
    assert "sharedKey" not in text, "logs go through diagnostic settings, not the workspace key"


def test_bicep_key_vault_protection():
    (vault,) = resources(bicep_text(), "Microsoft.KeyVault/vaults")
    assert re.search(r"enableRbacAuthorization: true\b", vault)
    assert re.search(r"enableSoftDelete: true\b", vault)
    assert re.search(r"enablePurgeProtection: true\b", vault)
    days = int(re.search(r"softDeleteRetentionInDays: (\d+)", vault).group(1))
    assert 7 <= days <= 90
    assert "accessPolicies" not in vault
    assert re.search(r"enabledForTemplateDeployment: false", vault)
    # Audit log to Log Analytics.
    kv = (ACA / "modules/keyvault.bicep").read_text()
    (diag,) = resources(kv, "Microsoft.Insights/diagnosticSettings")
    assert "scope: vault" in diag and "workspaceId:" in diag and "allLogs" in diag


def test_bicep_roles_are_least_privilege():
    text = bicep_text()
    for role_id, name in FORBIDDEN_ROLES.items():
        assert role_id not in text.lower(), f"{name} must not be granted"
    assignments = resources(text, "Microsoft.Authorization/roleAssignments")
    assert len(assignments) == 3
    granted = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    role_vars = dict(re.findall(r"^var (\w+RoleId) = '([0-9a-f-]{36})'", text, re.M))
    assert set(role_vars.values()) == {SECRETS_USER_ROLE, ACR_PULL_ROLE, METRICS_PUBLISHER_ROLE}, role_vars
    assert granted & set(FORBIDDEN_ROLES) == set()
    kv = (ACA / "modules/keyvault.bicep").read_text()
    (secrets_user,) = resources(kv, "Microsoft.Authorization/roleAssignments")
    assert "scope: vault" in secrets_user, "Key Vault Secrets User is scoped to the vault only"
    assert "keyVaultSecretsUserRoleId" in secrets_user
    assert "principalType: 'ServicePrincipal'" in secrets_user
    reg = (ACA / "modules/registry.bicep").read_text()
    (pull,) = resources(reg, "Microsoft.Authorization/roleAssignments")
    assert "scope: registry" in pull and "acrPullRoleId" in pull
    assert "adminUserEnabled: false" in reg
    # With an Azure Monitor workspace: write metrics through its one data collection rule.
    publisher_bicep = (ACA / "modules/metrics-publisher.bicep").read_text()
    (publisher,) = resources(publisher_bicep, "Microsoft.Authorization/roleAssignments")
    assert "scope: rule" in publisher and "monitoringMetricsPublisherRoleId" in publisher
    assert "principalType: 'ServicePrincipal'" in publisher


def test_bicep_secrets_have_expiry_and_no_literal_value():
    text = bicep_text()
    for block in resources(text, "Microsoft.KeyVault/vaults/secrets"):
        assert re.search(r"\bexp: \w+", block), "a secret without exp"
        value = re.search(r"\bvalue: (.+)", block).group(1).strip()
        assert re.fullmatch(r"\w+\.properties\.\w+", value), f"secret value must come from a resource, not {value!r}"
    assert "98728c90-32c7-4049-8429-847dc0f4fe37" in text, "policy: secrets need an expiration date"
    events = (ACA / "modules/secret-events.bicep").read_text()
    assert "topicType: 'Microsoft.KeyVault.vaults'" in events
    for event in ("SecretNearExpiry", "SecretExpired", "SecretNewVersionCreated"):
        assert f"'Microsoft.KeyVault.{event}'" in events


def app_bicep() -> str:
    return (ACA / "modules/app.bicep").read_text()


def container_block(name: str) -> str:
    text = app_bicep()
    at = text.index(f"name: '{name}'")
    start = text.rindex("{", 0, at)
    return block_after(text, start)


def test_bicep_app_ports_and_exposure():
    text = app_bicep()
    (app,) = resources(text, "Microsoft.App/containerApps")
    assert "targetPort: 8080" in app and "external: true" in app and "allowInsecure: false" in app
    assert "additionalPortMappings" not in app and "exposedPort" not in app
    containers = app[app.index("containers: ["):]
    order = [m.group(1) for m in re.finditer(r"^\s{10}name: '([\w-]+)'", containers, re.M)]
    assert order[:3] == ["keyward", "mcp-backend", "otel-collector"], order
    kw = container_block("keyward")
    probes = re.findall(r"type: '(\w+)'\s+httpGet: \{\s+path: '([^']+)'\s+port: (\d+)", kw)
    assert sorted(probes) == sorted([("Startup", "/livez", "9090"), ("Readiness", "/readyz", "9090"),
                                     ("Liveness", "/livez", "9090")]), probes
    backend = container_block("mcp-backend")
    assert "value: '127.0.0.1:8081'" in backend and f"value: '{HEALTH_API_URL}'" in backend
    assert "probes" not in backend and "secretRef" not in backend
    collector = container_block("otel-collector")
    assert "secretRef: 'appinsights-connection-string'" in collector
    assert "identity: identityId" in app and "'UserAssigned'" in app
    assert "keyVaultUrl:" in app
    secrets = app[app.index("secrets: ["):]
    secrets = secrets[:secrets.index("]")]
    assert "value:" not in secrets, "Container Apps secrets are Key Vault references"
    assert re.search(r"concurrentRequests: string\(concurrentRequests\)", app)
    assert "minReplicas: minReplicas" in app and "maxReplicas: maxReplicas" in app
    assert "storageType: 'EmptyDir'" in app
    # Every env var whose name looks like a credential is a secretRef.
    for m in re.finditer(r"name: '([A-Z_]+)'\s+(\w+):", text):
        if secretish(m.group(1)):
            assert m.group(2) == "secretRef", f"{m.group(1)} must be a secretRef"


def test_bicep_renders_the_config_template():
    text = app_bicep()
    assert "loadTextContent('../keyward.toml')" in text
    template = (ACA / "keyward.toml").read_text()
    for placeholder in ("# {{CLIENTS}}", "# {{OAUTH}}", "{{APIM_UPSTREAM}}", "{{VAULT_URL}}", "{{IDENTITY_CLIENT_ID}}"):
        assert f"'{placeholder}'" in text, f"Bicep does not replace {placeholder}"
        assert placeholder in template, f"keyward.toml lacks {placeholder}"
    assert re.search(r"secret = \"mcp-client-\$\{id\}\"", text), "client secrets are mcp-client-<id>"
    assert "loadTextContent('../otel-collector.yaml')" in text


# --------------------------------------------------------------------------------------------
# Entra ID bearer tokens
# --------------------------------------------------------------------------------------------

# main.bicep's Entra ID parameters: type, default, and the azd environment variable feeding it.
ENTRA_PARAMS = {
    "entraTenantId": ("string", "tenant().tenantId", "KEYWARD_ENTRA_TENANT_ID"),
    "entraAppIdUri": ("string", "''", "KEYWARD_ENTRA_APP_ID_URI"),
    "entraAppClientId": ("string", "''", "KEYWARD_ENTRA_APP_CLIENT_ID"),
    "entraRequiredScopes": ("array", "[\n  'mcp.tools'\n]", None),
    "entraAcceptV1Tokens": ("bool", "false", "KEYWARD_ENTRA_V1_TOKENS"),
    "mcpResourceUrl": ("string", "''", "KEYWARD_MCP_RESOURCE_URL"),
    "mcpAgents": ("array", "[]", "KEYWARD_MCP_AGENTS"),
}


def param_default(text: str, name: str) -> str:
    m = re.search(rf"^param {name} [\w.]+ = (.+?)$(?=\n(?:\n|@|param |//|$))", text, re.M | re.S)
    assert m, f"param {name} has no default"
    return m.group(1)


def bicep_var(text: str, name: str) -> str:
    m = re.search(rf"^var {name} = (.+)$", text, re.M)
    assert m, f"no var {name}"
    return m.group(1)


def module_call(text: str, name: str) -> str:
    m = re.search(rf"^module {name} '[^']+' = (?:if \([^\n]*\) )?", text, re.M)
    body = block_after(text, m.end())
    return block_after(body, body.index("params:"))


def test_bicep_entra_parameters_are_optional_and_reach_the_app():
    main = (ACA / "main.bicep").read_text()
    types = {n: t for n, t, _ in bicep_params(main)}
    declared, required = module_params(ACA / "main.bicep")
    app_declared, _ = module_params(ACA / "modules/app.bicep")
    call = module_call(main, "app")
    for name, (type_, default, _) in ENTRA_PARAMS.items():
        assert name in declared and name not in required, f"{name}: an optional parameter of main.bicep"
        assert types[name] == type_, f"{name}: {types[name]}, not {type_}"
        assert param_default(main, name) == default, f"{name}: default {param_default(main, name)!r}"
        assert name in app_declared, f"modules/app.bicep lacks {name}"
        assert re.search(rf"^\s{{4}}{name}: ", call, re.M), f"main.bicep does not pass {name} to the app"
    # An empty tenant (azd passes '' for a variable set empty) is the deployment's tenant too.
    assert "entraTenantId: empty(entraTenantId) ? tenant().tenantId : entraTenantId" in call
    assert "output KEYWARD_MCP_RESOURCE string = app.outputs.mcpResource" in main


def test_parameters_file_maps_the_entra_parameters():
    params = json.loads((ACA / "main.parameters.json").read_text())["parameters"]
    for name, (_, _, var) in ENTRA_PARAMS.items():
        if var is None:
            assert name not in params
            continue
        assert re.fullmatch(rf"\$\{{{var}(=[^}}]*)?\}}", params[name]["value"]), f"{name}: {params[name]}"
    # No default in the file for these: azd leaves a parameter out while its variable is unset,
    # so the template's default applies (tenant(), an empty array; a "[]" would be a string).
    assert params["entraTenantId"]["value"] == "${KEYWARD_ENTRA_TENANT_ID}"
    assert params["mcpAgents"]["value"] == "${KEYWARD_MCP_AGENTS}"
    # Unset: main.bicep's default client; set but empty: none (agents only).
    assert params["mcpClients"]["value"] == "${KEYWARD_MCP_CLIENTS}"
    hook = (ACA / "hooks/postprovision.sh").read_text()
    assert "${KEYWARD_MCP_CLIENTS-claude-desktop}" in hook, "the hook's default must be the template's"
    assert re.search(r"^param mcpClients string = 'claude-desktop'$", (ACA / "main.bicep").read_text(), re.M)


def test_bicep_renders_oauth_only_when_the_app_id_uri_is_set():
    app = app_bicep()
    assert bicep_var(app, "oauthEnabled") == "!empty(entraAppIdUri)"
    oauth = bicep_var(app, "oauthToml")
    assert oauth.startswith("oauthEnabled ? '[ingress.oauth]\\n") and oauth.endswith(" : ''"), oauth
    assert "${agentsToml}" in oauth, "agents are rendered with [ingress.oauth] only"
    assert "'# {{OAUTH}}', oauthToml)" in bicep_var(app, "keywardConfig")
    # The resource: the given URL, else the app's own FQDN (its name under the environment's
    # default domain) and /mcp.
    assert bicep_var(app, "appName") == "'ca-keyward-${nameSuffix}'"
    (container_app,) = resources(app, "Microsoft.App/containerApps")
    assert re.search(r"^\s{2}name: appName$", container_app, re.M)
    assert bicep_var(app, "oauthResource") == (
        "empty(mcpResourceUrl) ? 'https://${appName}.${environment.properties.defaultDomain}/mcp' : mcpResourceUrl")
    assert bicep_var(app, "oauthAudiences") == "filter([entraAppIdUri, entraAppClientId], a => !empty(a))"
    assert 'issuer = "https://login.microsoftonline.com/${entraTenantId}/v2.0"' in bicep_var(app, "oauthV2IssuerToml")
    v1 = bicep_var(app, "oauthV1IssuerToml")
    assert v1.startswith("entraAcceptV1Tokens ? ") and v1.endswith(" : ''")
    assert 'issuer = "https://sts.windows.net/${entraTenantId}/"' in v1
    agents = bicep_var(app, "agentsToml")
    assert agents.startswith("join(map(mcpAgents, agent => '[[ingress.clients]]")
    assert 'id = "${agent.id}"' in agents and "token_ids = ${string(agent.appIds)}" in agents
    assert "secret" not in agents, "an agent has no key"


def test_bicep_oauth_rendering_matches_the_one_the_config_tests_use():
    """manifests.render_oauth stands in for the Bicep in test_config.py: every line it writes
    is written by app.bicep too (values aside)."""
    app = app_bicep()
    full = {**SAMPLE_ENTRA, "entraAcceptV1Tokens": True, "mcpResourceUrl": "",
            "mcpAgents": [{"id": "agent-b", "appIds": [AGENT_B, AGENT_B2]}]}
    for line in filter(None, render_oauth(full).splitlines()):
        key = line.split(" = ")[0]
        # A line starts a Bicep string or follows a \n in one.
        assert any(f"{start}{key}{end}" in app for start in ("'", "\\n") for end in ("\\n", " = ")), (
            f"app.bicep does not render {line!r}")
    assert render_oauth({**full, "entraAppIdUri": ""}) == ""


def test_bicep_creates_no_app_registration():
    """Registering apps is left to az ad (deploy/README.md): no Microsoft Graph extension or
    resource in the template, and main.bicep says why."""
    for path in BICEP_FILES:
        text = path.read_text()
        assert not re.search(r"^\s*(extension|provider|import)\b", text, re.M), f"{rel(path)}: an extension"
        assert not re.search(r"^resource \w+ 'Microsoft\.Graph/", text, re.M), f"{rel(path)}: a Graph resource"
    main = (ACA / "main.bicep").read_text()
    assert "Microsoft Graph Bicep" in main and "az ad app create" in main and "az ad sp create" in main


def test_bicep_compiles_if_a_compiler_is_available(tmp_path):
    if shutil.which("bicep"):
        cmd = ["bicep", "build", str(ACA / "main.bicep"), "--outdir", str(tmp_path)]
    elif shutil.which("az") and subprocess.run(["az", "bicep", "version"], capture_output=True).returncode == 0:
        cmd = ["az", "bicep", "build", "--file", str(ACA / "main.bicep"), "--outdir", str(tmp_path)]
    else:
        pytest.skip("no Bicep compiler (bicep or az bicep) on this machine")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    json.loads((tmp_path / "main.json").read_text())


# --------------------------------------------------------------------------------------------
# azd and its hook
# --------------------------------------------------------------------------------------------


def test_azure_yaml():
    azd = yaml.safe_load((DEPLOY / "azure.yaml").read_text())
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", azd["name"])
    assert azd["infra"] == {"provider": "bicep", "path": "aca", "module": "main"}
    assert (DEPLOY / "aca/main.bicep").is_file() and (DEPLOY / "aca/main.parameters.json").is_file()
    hook = azd["hooks"]["postprovision"]["posix"]
    script = DEPLOY / hook["run"]
    assert script.is_file() and os.access(script, os.X_OK)
    # The hook builds exactly the Dockerfiles that exist, and feeds the params main.bicep reads.
    text = script.read_text()
    for dockerfile in re.findall(r"--file (deploy/\S+)", text):
        assert (ROOT / dockerfile).is_file(), dockerfile
    params = (ACA / "main.parameters.json").read_text()
    for var in ("KEYWARD_IMAGE", "MCP_BACKEND_IMAGE"):
        assert f"azd env set {var} " in text and "${" + var + "=" in params
    outputs = set(re.findall(r"^output (\w+) ", (ACA / "main.bicep").read_text(), re.M))
    for var in set(re.findall(r"\$\{(AZURE_\w+|KEYWARD_APP_NAME)", text)):
        assert var in outputs, f"the hook reads {var}, which main.bicep does not output"


def test_hook_script_is_valid_shell():
    script = ACA / "hooks/postprovision.sh"
    out = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("shellcheck not installed")
    out = subprocess.run([shellcheck, "-s", "sh", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    # Secret values never go on a command line (shell history, process list).
    assert "--value" not in script.read_text()
