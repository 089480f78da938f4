"""The Container Apps YAML (deploy/aca/containerapp.yaml after envsubst) and the collector
configuration it embeds: identity, Key Vault references, one exposed port, probes,
resources Container Apps accepts, credentials dropped from telemetry, the Entra ID block and
its variables. The metrics path through the collector (OTLP in, Application Insights or an
Azure Monitor workspace out) is test_metrics_ingestion.py's."""

from __future__ import annotations

import re

import pytest
import yaml

from manifests import (
    ACA,
    ADMIN_PORT,
    BACKEND_LISTEN,
    ENTRA_ENVSUBST_VARS,
    ENVSUBST_VARS,
    HEALTH_API_URL,
    KEYWARD_PORT,
    SAMPLE,
    aca_yaml,
    collector_config,
    commented_oauth_block,
    container,
    env_of,
    secretish,
)

ACA_CPU_MEMORY = {0.25 * n: 0.5 * n for n in range(1, 17)}  # Consumption: 0.25 vCPU / 0.5 Gi steps


def gi(mem: str) -> float:
    assert mem.endswith("Gi"), mem
    return float(mem[:-2])


def test_aca_yaml_app():
    app = aca_yaml()
    assert app["identity"]["type"] == "UserAssigned"
    assert list(app["identity"]["userAssignedIdentities"]) == [ENVSUBST_VARS["KEYWARD_IDENTITY_ID"]]
    conf = app["properties"]["configuration"]
    ingress = conf["ingress"]
    assert ingress["targetPort"] == KEYWARD_PORT and ingress["external"] is True
    assert ingress["allowInsecure"] is False
    assert "additionalPortMappings" not in ingress, "no second port may be exposed"
    assert conf["registries"] == [{"server": ENVSUBST_VARS["AZURE_CONTAINER_REGISTRY_ENDPOINT"],
                                   "identity": ENVSUBST_VARS["KEYWARD_IDENTITY_ID"]}]
    for s in conf.get("secrets", []):
        assert "value" not in s, f"Container Apps secret {s['name']} carries a value"
        assert s["keyVaultUrl"].startswith(SAMPLE["vault"] + "secrets/")
        assert s["identity"] == ENVSUBST_VARS["KEYWARD_IDENTITY_ID"]
    tmpl = app["properties"]["template"]
    names = [c["name"] for c in tmpl["containers"]]
    assert names[0] == "keyward", "keyward first: it owns the ingress"
    kw, backend = tmpl["containers"][0], container(tmpl, "mcp-backend")
    probes = {p["type"]: p["httpGet"] for p in kw["probes"]}
    assert probes == {
        "Startup": {"path": "/livez", "port": ADMIN_PORT},
        "Readiness": {"path": "/readyz", "port": ADMIN_PORT},
        "Liveness": {"path": "/livez", "port": ADMIN_PORT},
    }
    assert env_of(kw)["KEYWARD_CONFIG"]["value"] == "/etc/keyward/keyward.toml"
    assert env_of(backend)["MCP_BACKEND_LISTEN"]["value"] == BACKEND_LISTEN
    assert env_of(backend)["HEALTH_API_URL"]["value"] == HEALTH_API_URL
    assert "probes" not in backend and "ports" not in backend
    for c in tmpl["containers"] + tmpl.get("initContainers", []):
        for e in c.get("env", []):
            if secretish(e["name"]):
                assert "value" not in e and "secretRef" in e, f"{c['name']}: {e['name']} must be a secretRef"
    # The config reaches keyward through the EmptyDir volume the init container writes.
    (init,) = tmpl["initContainers"]
    assert "/etc/keyward/keyward.toml" in " ".join(init["command"])
    assert {v["name"]: v["storageType"] for v in tmpl["volumes"]} == {"keyward-config": "EmptyDir"}
    for c in (init, kw):
        assert {"volumeName": "keyward-config", "mountPath": "/etc/keyward"} in c["volumeMounts"]
    # Resources add up to a combination Container Apps accepts, with and without the init container.
    cpu = sum(float(c["resources"]["cpu"]) for c in tmpl["containers"])
    mem = sum(gi(c["resources"]["memory"]) for c in tmpl["containers"])
    assert ACA_CPU_MEMORY.get(cpu) == mem, (cpu, mem)
    assert ACA_CPU_MEMORY.get(cpu + float(init["resources"]["cpu"])) == mem + gi(init["resources"]["memory"])
    scale = tmpl["scale"]
    assert 1 <= scale["minReplicas"] < scale["maxReplicas"]
    (rule,) = scale["rules"]
    assert int(rule["http"]["metadata"]["concurrentRequests"]) > 0


def test_aca_yaml_collector_config_matches_file():
    tmpl = aca_yaml()["properties"]["template"]
    collector = container(tmpl, "otel-collector")
    assert collector["args"] == ["--config=env:OTELCOL_CONFIG"]
    embedded = yaml.safe_load(env_of(collector)["OTELCOL_CONFIG"]["value"])
    assert embedded == yaml.safe_load((ACA / "otel-collector.yaml").read_text())


@pytest.mark.parametrize("workspace", [False, True], ids=["app-insights", "azure-monitor-workspace"])
def test_collector_config(workspace):
    """Both configurations the collector runs with (test_metrics_ingestion.py has the metrics
    side): loopback receivers only, credentials dropped on every pipeline, every component
    the pipelines name defined."""
    cfg = collector_config(workspace)
    assert set(cfg["receivers"]) == {"otlp"}, "keyward's OTLP is the only input (no scrape of /metrics)"
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"].startswith("127.0.0.1:")
    assert f":{ADMIN_PORT}" not in yaml.safe_dump(cfg), "nothing reads keyward's admin port"
    assert cfg["exporters"]["azuremonitor"]["connection_string"] == "${env:APPLICATIONINSIGHTS_CONNECTION_STRING}"
    dropped = {a["key"] for a in cfg["processors"]["attributes/drop-credentials"]["actions"] if a["action"] == "delete"}
    assert {"http.request.header.x-api-key", "http.request.header.authorization",
            "http.request.header.ocp-apim-subscription-key"} <= dropped
    for name, pipe in cfg["service"]["pipelines"].items():
        for comp in pipe["receivers"]:
            assert comp in cfg["receivers"], f"{name}: receiver {comp} undefined"
        for comp in pipe["processors"]:
            assert comp in cfg["processors"], f"{name}: processor {comp} undefined"
        for comp in pipe["exporters"]:
            assert comp in cfg["exporters"], f"{name}: exporter {comp} undefined"
        assert "attributes/drop-credentials" in pipe["processors"], f"{name}: credentials not dropped"
        assert pipe["processors"][0] == "memory_limiter" and pipe["processors"][-1] == "batch", name
    for ext in cfg["service"].get("extensions", []):
        assert ext in cfg.get("extensions", {}), f"extension {ext} undefined"


def test_aca_yaml_entra_block_and_its_variables():
    """The commented Entra ID block uses exactly the four variables the header tells the
    operator to export; the envsubst list given there for the default leaves them alone."""
    text = (ACA / "containerapp.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    init = aca_yaml(rendered=False)["properties"]["template"]["initContainers"][0]
    config = env_of(init)["KEYWARD_CONFIG_TOML"]["value"]
    first, end = commented_oauth_block(config)
    block = "\n".join(config.splitlines()[first:end])
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", block))
    assert used == set(ENTRA_ENVSUBST_VARS), used
    for var in used:
        assert var in header, f"the header does not name {var}"
    documented_list = re.search(r"envsubst '([^']+)'", header).group(1).split()
    assert not {f"${v}" for v in used} & set(documented_list)
    assert not used & set(ENVSUBST_VARS)
