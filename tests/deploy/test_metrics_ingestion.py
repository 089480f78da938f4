"""keyward's metrics on Container Apps, from keyward to the Azure Monitor workspace the workbook
and the alert rules read: one source (keyward's OTLP push; the collector scrapes nothing), the
collector's two configurations (otel-collector.yaml alone: Application Insights; with
otel-collector.remote-write.yaml merged over it: Prometheus remote write to the workspace,
authenticated by the azure_auth extension with the app's identity, in the metrics pipeline
only), the names remote write gives keyward's instruments (the Prometheus names the queries
use), and the Bicep that sets the collector's variables and grants Monitoring Metrics
Publisher on the workspace's data collection rule, only when main.bicep is given a workspace.

Nothing here runs a collector or deploys: the checks read the files (conftest.py)."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml

from manifests import (
    ACA,
    ADMIN_PORT,
    COLLECTOR_CONFIG,
    COLLECTOR_REMOTE_WRITE,
    METRICS_PUBLISHER_ROLE,
    aca_yaml,
    aca_yaml_config,
    collector_config,
    component_type,
    container,
    env_of,
    rel,
    render_aca_template,
)
from test_bicep import BICEP_FILES, bicep_var, block_after, container_block, mask_bicep, module_call, resources
from test_monitoring import METRICS, metrics_sources

MODES = [False, True]
MODE_IDS = ["app-insights", "azure-monitor-workspace"]

# The pinned collector's names (main.bicep's otelCollectorImage, otelcol-contrib 0.160.0).
REMOTE_WRITE = "prometheus_remote_write"
AZURE_AUTH = "azure_auth"
REMOTE_WRITE_URL_VAR = "AZURE_MONITOR_REMOTE_WRITE_URL"
OVERLAY_VAR = "OTELCOL_CONFIG_REMOTE_WRITE"
# Azure Monitor's audience in the public cloud (the ingestion host is not the audience).
MONITOR_SCOPE = "https://monitor.azure.com/.default"
# Variables Container Apps sets in every container itself.
PLATFORM_VARS = {"CONTAINER_APP_REPLICA_NAME"}
INGESTION_PATH = "/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24"


def env_refs(cfg) -> set[str]:
    """The ${env:NAME} references of a collector configuration."""
    return set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}", yaml.safe_dump(cfg)))


# --------------------------------------------------------------------------------------------
# One source for keyward's metrics
# --------------------------------------------------------------------------------------------


def metrics_sources_of(cfg: dict) -> list[str]:
    """Every way metrics get into the collector: the receivers of every metrics pipeline, and
    any receiver that scrapes (a scrape_configs anywhere under it) even if no pipeline names
    it yet."""
    sources = []
    for name, pipe in cfg["service"]["pipelines"].items():
        if component_type(name) == "metrics":
            sources += pipe["receivers"]
    for rid, rcfg in (cfg.get("receivers") or {}).items():
        if rid not in sources and "scrape_configs" in yaml.safe_dump(rcfg or {}):
            sources.append(rid)
    return sources


@pytest.mark.parametrize("workspace", MODES, ids=MODE_IDS)
def test_keyward_metrics_have_one_source(workspace):
    cfg = collector_config(workspace)
    metric_pipelines = [n for n in cfg["service"]["pipelines"] if component_type(n) == "metrics"]
    assert metric_pipelines == ["metrics"], "one metrics pipeline: a second one would export twice"
    assert metrics_sources_of(cfg) == ["otlp"], "keyward's OTLP push, nothing else"
    assert not any(component_type(r).startswith("prometheus") for r in cfg["receivers"]), "no scrape"
    assert f"{ADMIN_PORT}" not in yaml.safe_dump(cfg["receivers"])


def test_the_source_check_catches_a_second_source():
    """The check above fails for the configuration before this change (OTLP and a scrape of
    /metrics), and for a scrape receiver that no pipeline names."""
    cfg = collector_config()
    cfg["receivers"]["prometheus"] = {"config": {"scrape_configs": [
        {"job_name": "keyward", "static_configs": [{"targets": [f"127.0.0.1:{ADMIN_PORT}"]}]}]}}
    assert metrics_sources_of(cfg) == ["otlp", "prometheus"]
    cfg["service"]["pipelines"]["metrics"]["receivers"] = ["otlp", "prometheus"]
    assert metrics_sources_of(cfg) == ["otlp", "prometheus"]


def keyward_configs() -> dict[str, str]:
    return {
        "aca/keyward.toml (rendered as Bicep does)": render_aca_template(["claude-desktop"]),
        "aca/containerapp.yaml": aca_yaml_config(),
    }


@pytest.mark.parametrize("name", keyward_configs())
def test_keyward_pushes_its_metrics_to_the_collector(name):
    """keyward exports its metrics to its one OTLP endpoint (the traces' one) unless
    OTEL_METRICS_EXPORTER=none: that endpoint must be the collector's receiver, and nothing
    in keyward's container may switch metrics off or send them elsewhere."""
    otlp = collector_config()["receivers"]["otlp"]["protocols"]
    tel = tomllib.loads(keyward_configs()[name])["telemetry"]
    assert tel["otlp_endpoint"] == f"http://{otlp['grpc']['endpoint']}" and tel["otlp_protocol"] == "grpc"
    kw_env = env_of(container(aca_yaml()["properties"]["template"], "keyward"))
    bicep_env = set(re.findall(r"name: '([A-Z_]+)'", container_block("keyward")))
    for var in ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL"):
        assert var not in kw_env and var not in bicep_env, f"keyward's {var} is the file's business"


# --------------------------------------------------------------------------------------------
# Remote write and azure_auth: with a workspace, in the metrics pipeline only
# --------------------------------------------------------------------------------------------


def remote_write_exporters(cfg: dict) -> list[str]:
    return [e for e in cfg.get("exporters", {}) if component_type(e) == REMOTE_WRITE]


def pipelines_using(cfg: dict, component: str) -> list[str]:
    return [n for n, p in cfg["service"]["pipelines"].items()
            if component in p["receivers"] + p.get("processors", []) + p["exporters"]]


def test_without_a_workspace_everything_goes_to_application_insights():
    cfg = collector_config()
    assert not remote_write_exporters(cfg) and AZURE_AUTH not in cfg.get("extensions", {})
    assert not cfg["service"].get("extensions")
    for name, pipe in cfg["service"]["pipelines"].items():
        assert pipe["exporters"] == ["azuremonitor"], name
    assert not env_refs(cfg) & {REMOTE_WRITE_URL_VAR, "AZURE_CLIENT_ID"}


def test_with_a_workspace_metrics_are_remote_written():
    cfg = collector_config(workspace=True)
    (exporter,) = remote_write_exporters(cfg)
    assert pipelines_using(cfg, exporter) == ["metrics"], "remote write carries metrics only"
    assert cfg["service"]["pipelines"]["metrics"]["exporters"] == [exporter], \
        "the workspace alone: Application Insights would bill the same series again"
    for name in ("traces", "logs"):
        assert cfg["service"]["pipelines"][name]["exporters"] == ["azuremonitor"], name
    # The overlay changes the metrics pipeline's exporters only.
    base = collector_config()
    for name, pipe in cfg["service"]["pipelines"].items():
        assert {k: v for k, v in pipe.items() if k != "exporters"} == \
            {k: v for k, v in base["service"]["pipelines"][name].items() if k != "exporters"}, name
    # azure_auth runs, and only remote write uses it.
    assert cfg["service"]["extensions"] == [AZURE_AUTH]
    users = [eid for eid, ecfg in cfg["exporters"].items() if AZURE_AUTH in yaml.safe_dump(ecfg or {})]
    assert users == [exporter]
    for kind in ("receivers", "processors"):
        assert AZURE_AUTH not in yaml.safe_dump(cfg[kind]), f"{kind} must not use {AZURE_AUTH}"


def test_remote_write_settings():
    cfg = collector_config(workspace=True)
    (exporter,) = remote_write_exporters(cfg)
    rw = cfg["exporters"][exporter]
    http = rw["http"]
    assert http["endpoint"] == "${env:" + REMOTE_WRITE_URL_VAR + "}"
    assert http["auth"] == {"authenticator": AZURE_AUTH}
    assert "headers" not in http and "headers" not in rw, "no static credential"
    # Client settings under `http` (the flat ones are deprecated in the pinned version); the
    # flat keys must not be mixed in.
    assert not {"endpoint", "auth", "headers", "tls"} & set(rw)
    # Names as the queries have them: suffixes, `.` as `_`, no prefix, no resource labels.
    assert rw["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert not {"namespace", "add_metric_suffixes", "resource_to_telemetry_conversion",
                "resource_constant_labels", "external_labels"} & set(rw)
    auth = cfg["extensions"][AZURE_AUTH]
    assert auth == {"managed_identity": {"client_id": "${env:AZURE_CLIENT_ID}"}, "scopes": [MONITOR_SCOPE]}, \
        "the app's user-assigned identity, a token for Azure Monitor, no secret"


def test_overlay_is_the_only_place_remote_write_is_configured():
    """otel-collector.yaml (and the copy containerapp.yaml embeds) has no trace of it, so that a
    deployment without a workspace needs none of its variables."""
    for text in (COLLECTOR_CONFIG.read_text(),
                 env_of(container(aca_yaml()["properties"]["template"], "otel-collector"))["OTELCOL_CONFIG"]["value"]):
        cfg = yaml.safe_load(text)
        assert not remote_write_exporters(cfg) and "extensions" not in cfg
    overlay = yaml.safe_load(COLLECTOR_REMOTE_WRITE.read_text())
    assert set(overlay) == {"extensions", "exporters", "service"}
    assert set(overlay["service"]["pipelines"]) == {"metrics"}
    assert set(overlay["service"]["pipelines"]["metrics"]) == {"exporters"}


# --------------------------------------------------------------------------------------------
# The names keyward's instruments get in the workspace
# --------------------------------------------------------------------------------------------

# UnderscoreEscapingWithSuffixes, as the OpenTelemetry-to-Prometheus compatibility rules give
# it: main units in words, per-units as per_<unit>, annotations ({...}) dropped.
UNITS = {"d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
         "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
         "MiBy": "mebibytes", "GiBy": "gibibytes", "1": "", "%": "percent"}
PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def clean(token: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9:]", "_", token)).lstrip("_")


def prometheus_name(name: str, unit: str, kind: str) -> str:
    """The name remote write gives an instrument (kind: counter, histogram, gauge, updowncounter)."""
    tokens = [t for t in re.split(r"[^A-Za-z0-9:]+", name) if t]
    main, _, per = (u.strip() for u in unit.partition("/"))
    main_suffix = clean(UNITS.get(main, main)) if main and not re.search(r"[{}]", main) else ""
    per_suffix = clean(PER_UNITS.get(per, per)) if per and not re.search(r"[{}]", per) else ""
    if main_suffix and main_suffix not in tokens:
        tokens.append(main_suffix)
    if per_suffix and per_suffix not in tokens:
        tokens += ["per", per_suffix]
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == "gauge":
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    out = "_".join(tokens)
    return "_" + out if out[:1].isdigit() else out


def label_name(key: str) -> str:
    out = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", key))
    return "key_" + out if out[:1].isdigit() else out


def test_the_name_translation_follows_the_rules():
    """Cases from the compatibility rules, so that a pass below means something."""
    assert prometheus_name("http.server.request.duration", "s", "histogram") == "http_server_request_duration_seconds"
    assert prometheus_name("requests.count", "1", "counter") == "requests_count_total"
    assert prometheus_name("memory.usage", "By", "gauge") == "memory_usage_bytes"
    assert prometheus_name("cpu.utilization", "1", "gauge") == "cpu_utilization_ratio"
    assert prometheus_name("queue.wait.seconds", "s", "gauge") == "queue_wait_seconds"
    assert prometheus_name("errors.total", "{error}", "counter") == "errors_total"
    assert prometheus_name("throughput", "By/s", "gauge") == "throughput_bytes_per_second"
    assert prometheus_name("in.flight", "{request}", "updowncounter") == "in_flight"
    assert label_name("http.response.status_code") == "http_response_status_code"
    assert label_name("a..b") == "a_b" and label_name("2xx") == "key_2xx"


def source_text() -> str:
    texts = []
    for path in metrics_sources():
        text = path.read_text()
        texts.append(text[:text.find("#[cfg(test)]")] if "#[cfg(test)]" in text else text)
    return "\n".join(texts)


KINDS = {"counter": "counter", "observable_counter": "counter", "histogram": "histogram",
         "gauge": "gauge", "observable_gauge": "gauge", "up_down_counter": "updowncounter",
         "observable_up_down_counter": "updowncounter"}


def helpers(text: str) -> dict[str, tuple[str, list[str], str | None]]:
    """Functions that build an instrument from a `name` argument:
    fn name -> (kind, argument names, the unit they fix or None)."""
    found = {}
    for fn in re.finditer(r"fn (\w+)\(([^)]*)\)\s*->\s*\w+<\w+>\s*\{", text):
        body = text[fn.end():text.find("\n}", fn.end())]
        built = re.search(r"\.(?:u64|f64|i64)_(\w+)\(\s*name\s*\)", body)
        if built and built.group(1) in KINDS:
            args = [a.split(":")[0].strip() for a in fn.group(2).split(",") if a.strip()]
            fixed = re.search(r"\.with_unit\(\s*\"([^\"]*)\"", body)
            found[fn.group(1)] = (KINDS[built.group(1)], args, fixed.group(1) if fixed else None)
    return found


def helper_calls(text: str, fn: str) -> list[list[str]]:
    """The leading string literals of each call of `fn(&meter, "…", …)`."""
    calls = re.finditer(rf"\b{fn}\(\s*&?\w+\s*,\s*((?:\"[^\"]*\"\s*,\s*)+)", text)
    return [re.findall(r"\"([^\"]*)\"", c.group(1)) for c in calls]


def instruments(text: str) -> dict[str, tuple[str, str]]:
    """keyward's instruments, name -> (kind, unit): built in place
    (`meter.f64_observable_gauge("…").with_unit("s")`) or through a helper
    (`fn duration(meter, name, …)` building `meter.f64_histogram(name).with_unit("s")`)."""
    found = {}
    for m in re.finditer(r"\.(?:u64|f64|i64)_(\w+)\(\s*\"([^\"]+)\"\s*\)", text):
        unit = re.match(r"\s*\.with_unit\(\s*\"([^\"]*)\"", text[m.end():])
        found[m.group(2)] = (KINDS[m.group(1)], unit.group(1) if unit else "")
    for fn, (kind, args, fixed) in helpers(text).items():
        for literals in helper_calls(text, fn):
            given = dict(zip(args[1:], literals))
            found[literals[0]] = (kind, fixed if fixed is not None else given.get("unit", ""))
    return found


def test_instruments_are_read_from_the_source():
    text = source_text()
    found = instruments(text)
    assert found["http.server.request.duration"] == ("histogram", "s")
    assert found["keyward.auth.failures"][0] == "counter"
    assert found["keyward.secret.expiry"] == ("gauge", "s")
    # Every instrument the source builds is one the reader found.
    in_place = len(re.findall(r"\.(?:u64|f64|i64)_\w+\(", text)) - len(helpers(text))
    through_helpers = sum(len(re.findall(rf"\b{fn}\(\s*&", text)) for fn in helpers(text))
    assert len(found) == in_place + through_helpers, found


def test_remote_write_gives_the_names_the_workbook_and_alerts_query():
    """keyward's instruments, named as the exporter names them, are exactly the metrics the
    dashboards and rules are checked against (test_monitoring.METRICS): _seconds for `s`,
    _total for counters, the histograms' series, the labels."""
    text = source_text()
    prometheus_kind = {"updowncounter": "gauge"}
    names = {prometheus_name(n, unit, kind): prometheus_kind.get(kind, kind)
             for n, (kind, unit) in instruments(text).items()}
    assert set(names) == set(METRICS), (set(names) ^ set(METRICS))
    for name, (kind, _) in METRICS.items():
        assert names[name] == kind, f"{name}: a {names[name]}, not a {kind}"
    assert {"http_server_request_duration_seconds", "keyward_auth_failures_total",
            "keyward_secret_expiry_seconds"} <= set(names)
    keys = set(re.findall(r"const \w+: &str = \"([^\"]+)\";", text)) | set(re.findall(r"KeyValue::new\(\s*\"([^\"]+)\"", text))
    labels = set().union(*(label_set for _, label_set in METRICS.values()))
    assert {label_name(k) for k in keys} == labels, {label_name(k) for k in keys} ^ labels
    # Histograms stay classic (_bucket, _sum, _count), as the queries read them.
    rw = collector_config(workspace=True)["exporters"]
    assert all(not (cfg or {}).get("convert_explicit_histograms_to_nhcb") for cfg in rw.values())


# --------------------------------------------------------------------------------------------
# Bicep: the variables the collector reads, only with a workspace; the role on the rule
# --------------------------------------------------------------------------------------------


def app_text() -> str:
    return (ACA / "modules/app.bicep").read_text()


def bicep_env_names(block: str) -> set[str]:
    return set(re.findall(r"name: '([A-Za-z_][A-Za-z0-9_]*)'", block))


def test_bicep_sets_every_variable_the_collector_reads():
    text = app_text()
    collector = container_block("otel-collector")
    start = text.index("var collectorRemoteWriteEnv")
    overlay_env = text[start:text.index("] : []", start)]
    base_env = bicep_env_names(collector)
    assert env_refs(collector_config()) - PLATFORM_VARS <= base_env, env_refs(collector_config()) - base_env
    workspace_refs = env_refs(collector_config(workspace=True)) - env_refs(collector_config())
    assert workspace_refs == {REMOTE_WRITE_URL_VAR, "AZURE_CLIENT_ID"}
    assert workspace_refs | {OVERLAY_VAR} == bicep_env_names(overlay_env)
    # Only with a workspace: the overlay, its variables and the second --config.
    assert bicep_var(text, "remoteWrite") == "!empty(metricsRemoteWriteUrl)"
    assert overlay_env.startswith("var collectorRemoteWriteEnv = remoteWrite ? [")
    assert re.search(r"name: '" + REMOTE_WRITE_URL_VAR + r"'\s+value: metricsRemoteWriteUrl\b", overlay_env)
    assert re.search(r"name: 'AZURE_CLIENT_ID'\s+value: identityClientId\b", overlay_env)
    assert re.search(r"name: '" + OVERLAY_VAR + r"'\s+value: collectorRemoteWriteConfig\b", overlay_env)
    assert bicep_var(text, "collectorRemoteWriteConfig") == "loadTextContent('../otel-collector.remote-write.yaml')"
    args = collector[collector.index("args:"):re.search(r"^\s*env: ", collector, re.M).start()]
    assert re.fullmatch(r"args: concat\(\[\s*'--config=env:OTELCOL_CONFIG'\s*\], remoteWrite \? \[\s*"
                        r"'--config=env:" + OVERLAY_VAR + r"'\s*\] : \[\]\)\s*", args), args
    assert collector.rstrip().count("], collectorRemoteWriteEnv)") == 1


def test_containerapp_yaml_sets_every_variable_its_collector_reads():
    collector = container(aca_yaml()["properties"]["template"], "otel-collector")
    embedded = yaml.safe_load(env_of(collector)["OTELCOL_CONFIG"]["value"])
    assert env_refs(embedded) - PLATFORM_VARS <= set(env_of(collector))
    header = (ACA / "containerapp.yaml").read_text().split("\nlocation:")[0]
    for var in (OVERLAY_VAR, REMOTE_WRITE_URL_VAR, "AZURE_CLIENT_ID", "Monitoring Metrics"):
        assert var in header, f"the header does not say how to add {var}"
    assert collector["image"] == re.search(r"param otelCollectorImage string = '([^']+)'",
                                           (ACA / "main.bicep").read_text()).group(1)


def test_bicep_derives_the_url_from_the_workspace_only_when_given_one():
    main = (ACA / "main.bicep").read_text()
    m = re.search(r"^module (\w+) 'modules/metrics-ingestion\.bicep' = if \(!empty\(monitoringWorkspaceId\)\) ",
                  main, re.M)
    assert m, "metrics-ingestion.bicep is deployed only with monitoringWorkspaceId"
    call = module_call(main, m.group(1))
    assert re.search(r"^\s{4}monitoringWorkspaceId: monitoringWorkspaceId$", call, re.M)
    assert re.search(r"^\s{4}publisherPrincipalId: identity\.outputs\.principalId$", call, re.M)
    app_call = module_call(main, "app")
    assert re.search(rf"^\s{{4}}metricsRemoteWriteUrl: !empty\(monitoringWorkspaceId\) \? "
                     rf"{m.group(1)}\.outputs\.remoteWriteUrl : ''$", app_call, re.M)
    # The workspace's default rule and endpoint, read from the workspace.
    ingest = (ACA / "modules/metrics-ingestion.bicep").read_text()
    assert re.search(r"^resource workspace 'Microsoft\.Monitor/accounts@[\d-]+' existing = ", ingest, re.M)
    rule_call = module_call(ingest, "rule")
    assert "dataCollectionRuleId: workspace.properties.defaultIngestionSettings.dataCollectionRuleResourceId" in rule_call
    assert "dataCollectionEndpointId: workspace.properties.defaultIngestionSettings.dataCollectionEndpointResourceId" in rule_call
    assert "output remoteWriteUrl string = rule.outputs.remoteWriteUrl" in ingest
    rule = (ACA / "modules/metrics-ingestion-rule.bicep").read_text()
    assert re.search(r"^resource rule 'Microsoft\.Insights/dataCollectionRules@[\d-]+' existing = ", rule, re.M)
    assert re.search(r"^resource endpoint 'Microsoft\.Insights/dataCollectionEndpoints@[\d-]+' existing = ", rule, re.M)
    assert bicep_var(rule, "metricsIngestion") == "endpoint.properties.metricsIngestion.endpoint"
    url = re.search(r"^output remoteWriteUrl string = '(.+)'$", rule, re.M).group(1)
    assert url == "${ingestionBase}/dataCollectionRules/${rule.properties.immutableId}" + INGESTION_PATH
    assert "metricsIngestion" in bicep_var(rule, "ingestionBase")


def test_bicep_grants_metrics_publisher_on_the_rule():
    rule = (ACA / "modules/metrics-ingestion-rule.bicep").read_text()
    m = re.search(r"^module (\w+) 'metrics-publisher\.bicep' = ", rule, re.M)
    body = block_after(rule, m.end())
    assert "scope: resourceGroup(ruleIdParts[2], ruleIdParts[4])" in body, "deployed where the rule is"
    assert bicep_var(rule, "ruleIdParts") == "split(dataCollectionRuleId, '/')"
    call = module_call(rule, m.group(1))
    assert "dataCollectionRuleName: last(ruleIdParts)" in call and "principalId: publisherPrincipalId" in call
    publisher = (ACA / "modules/metrics-publisher.bicep").read_text()
    assert bicep_var(publisher, "monitoringMetricsPublisherRoleId") == f"'{METRICS_PUBLISHER_ROLE}'"
    assert re.search(r"^resource rule 'Microsoft\.Insights/dataCollectionRules@[\d-]+' existing = \{\s*"
                     r"name: dataCollectionRuleName\s*\}", publisher, re.M)
    (assignment,) = resources(publisher, "Microsoft.Authorization/roleAssignments")
    assert "scope: rule\n" in assignment, "on the rule, not its resource group or the workspace"
    assert "principalId: principalId" in assignment and "principalType: 'ServicePrincipal'" in assignment
    assert "subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)" in assignment
    assert "name: guid(rule.id, principalId, monitoringMetricsPublisherRoleId)" in assignment


RUNTIME = re.compile(r"\.(properties|outputs)\.")


def runtime_names_and_scopes(text: str) -> list[str]:
    """Names and scopes of resources and modules that use a value read at run time
    (.properties or .outputs, directly or through a variable)."""
    found = []
    code = mask_bicep(text)
    for m in re.finditer(r"^(resource|module) (\w+) '[^']+'(?: existing)? = (?:if \([^\n]*\) )?", code, re.M):
        body = block_after(text, m.end())
        for prop in ("name", "scope"):
            line = re.search(rf"^\s{{2}}{prop}: (.+)$", body, re.M)
            if not line:
                continue
            expr = line.group(1)
            for var in set(re.findall(r"\b[a-zA-Z]\w*\b", expr)):
                if re.search(rf"^var {var} = ", text, re.M):
                    expr += " " + bicep_var(text, var)
            if RUNTIME.search(expr):
                found.append(f"{m.group(2)}.{prop}: {expr}")
    return found


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_bicep_names_and_scopes_are_known_at_deployment_start(path):
    """Bicep refuses a name or scope of a resource or module that is only known once something
    is read (BCP120): why the rule's id goes down a module before it names the rule or the
    resource group of the role assignment. Checked here without a compiler: those properties
    use parameters and variables made of parameters, never .properties or .outputs."""
    assert runtime_names_and_scopes(path.read_text()) == []


def test_the_start_of_deployment_check_is_not_vacuous():
    """Scoping the rule's module by the id the workspace holds, or naming the rule by a
    variable that reads it, is what the check above catches."""
    text = (ACA / "modules/metrics-ingestion.bicep").read_text()
    head = "module rule 'metrics-ingestion-rule.bicep' = {\n  name: 'metrics-ingestion-rule'\n"
    assert head in text
    broken = text.replace(head, head + "  scope: resourceGroup(split(workspace.properties"
                                       ".defaultIngestionSettings.dataCollectionRuleResourceId, '/')[4])\n")
    assert runtime_names_and_scopes(broken) == [
        "rule.scope: resourceGroup(split(workspace.properties.defaultIngestionSettings"
        ".dataCollectionRuleResourceId, '/')[4])"]
    rule = (ACA / "modules/metrics-ingestion-rule.bicep").read_text()
    broken = rule.replace("var ruleIdParts = split(dataCollectionRuleId, '/')",
                          "var ruleIdParts = split(endpoint.properties.immutableId, '/')")
    assert broken != rule
    # The rule's name and scope, the module's scope.
    assert [f.split(":")[0] for f in runtime_names_and_scopes(broken)] == ["rule.name", "rule.scope", "publisher.scope"]
