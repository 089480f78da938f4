"""The Kubernetes overlays and components under deploy/k8s: every variant renders (see
render.py) and validates against the Kubernetes JSON schemas (kubernetes-validate, strict,
1.30 and the newest it ships); the pod is non-root and locked down, the backend never
exposed, the network policy and the Cilium policy narrow; the ports and addresses agree with
keyward's configuration."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter

import pytest
import yaml

from manifests import (
    ADMIN_PORT,
    BACKEND_LISTEN,
    GUID,
    HEALTH_API_URL,
    K8S,
    KEYWARD_PORT,
    all_containers,
    by_kind,
    container,
    env_of,
    files,
    load_yaml_docs,
    one,
    pod_spec,
    rel,
    secretish,
)
from render import (
    K8S_VARIANTS,
    kustomize_command,
    materialize_variant,
    render_builtin,
    render_variant,
    render_with_tool,
)

# Kubernetes versions each variant is validated against (the schemas kubernetes-validate ships).
SCHEMA_VERSIONS = {
    "keyvault": ["1.30", "1.33"],
    "secret-volume": ["1.30", "1.33"],
    "keyvault+cilium-fqdn": ["1.30"],
    "secret-volume+legacy-sidecar": ["1.28"],
    "keyvault-entra": ["1.30", "1.33"],
}
CRD_KINDS = {"CiliumNetworkPolicy"}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kdir", [p.parent for p in files("kustomization.yaml", K8S)], ids=rel)
def test_kustomization_references_exist(kdir):
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    refs = list(k.get("resources", [])) + list(k.get("components", []))
    refs += [p["path"] for p in k.get("patches", []) if "path" in p]
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        refs += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    assert refs or k.get("patches"), f"{rel(kdir)} does nothing"
    for r in refs:
        assert (kdir / r).exists(), f"{rel(kdir)}: {r} does not exist"
    # Values never enter Git through a generator either.
    assert "secretGenerator" not in k, f"{rel(kdir)}: secretGenerator would commit secret values"


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_variant_renders(variant, tmp_root):
    docs, how = render_variant(variant, tmp_root)
    kinds = Counter(d["kind"] for d in docs)
    for kind in ["Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                 "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
        assert kinds[kind] >= 1, f"{variant} ({how}): no {kind}"
    assert kinds["Secret"] == 0, f"{variant}: a Secret object is rendered; create it with kubectl instead"


def normalized(docs: list[dict]) -> dict:
    def norm(o):
        if isinstance(o, dict):
            return {k: norm(v) for k, v in sorted(o.items())}
        if isinstance(o, list):
            items = [norm(i) for i in o]
            if all(isinstance(i, dict) for i in items):
                return sorted(items, key=lambda i: json.dumps(i, sort_keys=True))
            return items
        if isinstance(o, str):
            return re.sub(r"^(keyward-config)-[a-z0-9]{10}$", r"\1", o)
        return o

    return {(d["kind"], norm(d["metadata"]["name"])): norm(d) for d in docs}


@pytest.mark.skipif(kustomize_command() is None, reason="neither kubectl nor kustomize installed (or DEPLOY_TESTS_BUILTIN_KUSTOMIZE=1)")
@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_builtin_renderer_agrees_with_kustomize(variant, tmp_root):
    vdir = materialize_variant(tmp_root, variant)
    tool, builtin = normalized(render_with_tool(vdir)), normalized(render_builtin(vdir))
    assert tool.keys() == builtin.keys()
    for key in tool:
        assert tool[key] == builtin[key], f"{variant}: {key} differs between kustomize and the built-in renderer"


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_schemas(variant, tmp_root):
    import kubernetes_validate

    docs, _ = render_variant(variant, tmp_root)
    for version in SCHEMA_VERSIONS[variant]:
        for d in docs:
            if d["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{variant} {d['kind']}/{d['metadata']['name']} invalid for {version}: {err.message} at {list(err.path)}")


def test_cilium_policy_shape():
    (policy,) = load_yaml_docs(K8S / "components/cilium-fqdn/cilium-egress.yaml")
    assert policy["apiVersion"] == "cilium.io/v2" and policy["kind"] == "CiliumNetworkPolicy"
    assert policy["spec"]["endpointSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keyward"}
    fqdns = [m["matchName"] for rule in policy["spec"]["egress"] for m in rule.get("toFQDNs", [])]
    assert any(f.endswith(".azure-api.net") for f in fqdns)
    assert any(f.endswith(".vault.azure.net") for f in fqdns)
    assert "login.microsoftonline.com" in fqdns
    ports = {p["port"] for rule in policy["spec"]["egress"] for tp in rule.get("toPorts", []) for p in tp["ports"]}
    assert ports <= {"53", "443", "4317"}, ports
    # The hosts agree with the keyvault overlay's configuration.
    cfg = tomllib.loads((K8S / "overlays/keyvault/keyward.toml").read_text())
    assert host(cfg["secrets"]["vault_url"]) in fqdns
    assert host(cfg["egress"]["routes"][0]["upstream"]) in fqdns


def host(url: str) -> str:
    return re.match(r"^https://([^/:]+)", url).group(1)


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


def assert_locked_down(c: dict, where: str):
    sc = c.get("securityContext", {})
    assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
    assert sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation"
    assert sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem"
    assert sc.get("privileged", False) is False, f"{where}: privileged"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities.drop ALL"
    assert not sc.get("capabilities", {}).get("add"), f"{where}: capabilities.add"
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
    assert sc.get("runAsUser", 65532) != 0, f"{where}: runAsUser 0"
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: resources.{kind} cpu and memory"


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_pod_security(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    spec = pod_spec(docs)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0 and psc["runAsGroup"] != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True
    assert spec.get("hostIPC") is not True
    assert spec.get("automountServiceAccountToken") is False
    assert one(docs, "ServiceAccount", "keyward").get("automountServiceAccountToken") is False
    for c in all_containers(spec):
        assert_locked_down(c, f"{variant}/{c['name']}")
        assert not c.get("envFrom"), f"{c['name']}: envFrom could pull in a whole Secret"
        for e in c.get("env", []):
            assert "valueFrom" not in e or "secretKeyRef" not in e["valueFrom"], (
                f"{c['name']}: secret in an environment variable ({e['name']})")
            if secretish(e["name"]):
                pytest.fail(f"{c['name']}: environment variable {e['name']} looks like a credential")
    for v in spec.get("volumes", []):
        assert "hostPath" not in v, f"volume {v['name']} is a hostPath"
    ns = one(docs, "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # keyward and the MCP server never share a uid (its process, its secret files).
    uids = {c["name"]: c.get("securityContext", {}).get("runAsUser", psc["runAsUser"])
            for c in all_containers(spec) if c["name"] in ("keyward", "mcp-backend")}
    assert uids["keyward"] != uids["mcp-backend"], uids


def port_number(c: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"named port {port} not declared by container {c['name']}"
    return named[port]


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_keyward_probes_ports_and_sidecar(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    spec = pod_spec(docs)
    kw = container(spec, "keyward")
    assert {p["containerPort"] for p in kw["ports"]} == {KEYWARD_PORT, ADMIN_PORT}
    probes = {
        "startupProbe": "/livez",
        "livenessProbe": "/livez",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        get = kw[probe]["httpGet"]
        assert get["path"] == path, f"{probe} path"
        assert port_number(kw, get["port"]) == ADMIN_PORT, f"{probe} port"
    assert env_of(kw)["KEYWARD_CONFIG"]["value"] == "/etc/keyward/keyward.toml"
    mounts = {m["mountPath"]: m for m in kw["volumeMounts"]}
    assert mounts["/etc/keyward"]["readOnly"] is True
    if "legacy-sidecar" in variant:
        assert [c["name"] for c in spec["containers"]] == ["keyward", "mcp-backend"]
        assert not spec.get("initContainers")
    else:
        # Native sidecar: first init container, restartPolicy Always.
        assert spec["initContainers"][0]["name"] == "keyward"
        assert spec["initContainers"][0]["restartPolicy"] == "Always"
        assert [c["name"] for c in spec["containers"]] == ["mcp-backend"]
    assert spec["terminationGracePeriodSeconds"] >= 20 + 5, "shutdown_grace plus preStop"


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_backend_is_never_exposed(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    spec = pod_spec(docs)
    backend = container(spec, "mcp-backend")
    env = env_of(backend)
    assert env["MCP_BACKEND_LISTEN"]["value"] == BACKEND_LISTEN
    assert env["HEALTH_API_URL"]["value"] == HEALTH_API_URL
    assert not backend.get("ports"), "mcp-backend declares a port"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe not in backend, "a probe of a loopback-only server cannot work"
    # The backend mounts nothing secret: no secret volume, no token.
    secret_volumes = {v["name"] for v in spec.get("volumes", []) if "secret" in v or "projected" in v}
    assert not {m["name"] for m in backend.get("volumeMounts", [])} & secret_volumes
    kw = container(spec, "keyward")
    kw_ports = {p.get("name"): p["containerPort"] for p in kw["ports"]}
    for svc in by_kind(docs, "Service"):
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "keyward"}
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            number = kw_ports[target] if isinstance(target, str) else target
            assert number in (KEYWARD_PORT, ADMIN_PORT), f"Service {svc['metadata']['name']} targets {number}"
            if number == ADMIN_PORT:
                assert "metrics" in svc["metadata"]["name"], "the admin port only in a Service named for metrics"
            if number == KEYWARD_PORT:
                assert svc["metadata"]["name"] == "keyward"
    # Exactly one Service carries the MCP port.
    mcp = [s for s in by_kind(docs, "Service")
           if any(kw_ports.get(p.get("targetPort"), p.get("targetPort")) == KEYWARD_PORT for p in s["spec"]["ports"])]
    assert len(mcp) == 1


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_network_policy(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    (np,) = by_kind(docs, "NetworkPolicy")
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "keyward"}
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    for rule in spec["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        assert ports <= {KEYWARD_PORT, ADMIN_PORT}, ports
        assert rule.get("from"), "an ingress rule without from: admits everyone"
        if ADMIN_PORT in ports:
            nss = [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in rule["from"]]
            assert nss == ["monitoring"], "admin port only from the monitoring namespace"
    egress_ports = set()
    for rule in spec["egress"]:
        ports = {p["port"] for p in rule["ports"]}
        egress_ports |= ports
        assert rule.get("to"), "an egress rule without to: allows everything"
        for peer in rule["to"]:
            if "ipBlock" in peer:
                assert ports == {443}, "only HTTPS leaves the cluster"
                except_ = set(peer["ipBlock"].get("except", []))
                assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= except_
    assert egress_ports == {53, 443, 4317}, egress_ports
    dns = [r for r in spec["egress"] if {p["port"] for p in r["ports"]} == {53}]
    assert dns and dns[0]["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


@pytest.mark.parametrize("variant", K8S_VARIANTS)
def test_availability(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    dep = one(docs, "Deployment", "keyward")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "keyward"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "keyward"}
    assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "the PDB must allow a drain"


def k8s_config(docs: list[dict]) -> dict:
    spec = pod_spec(docs)
    cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
    cm = one(docs, "ConfigMap", cm_name)
    return tomllib.loads(cm["data"]["keyward.toml"])


@pytest.mark.parametrize("variant", [v for v in K8S_VARIANTS if v.startswith("keyvault")])
def test_workload_identity(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    sa = one(docs, "ServiceAccount", "keyward")
    client_id = sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
    assert GUID.match(client_id)
    tmpl = one(docs, "Deployment", "keyward")["spec"]["template"]
    assert tmpl["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    skipped = tmpl["metadata"]["annotations"]["azure.workload.identity/skip-containers"].split(";")
    assert "mcp-backend" in skipped, "the backend must not receive the federated token"
    assert tmpl["spec"]["serviceAccountName"] == "keyward"
    cfg = k8s_config(docs)
    assert cfg["secrets"]["source"] == "keyvault"
    assert cfg["secrets"]["credential"] == "workload_identity"
    assert cfg["secrets"]["client_id"] == client_id


@pytest.mark.parametrize("variant", [v for v in K8S_VARIANTS if v.startswith("secret-volume")])
def test_secret_volume(variant, tmp_root):
    docs, _ = render_variant(variant, tmp_root)
    spec = pod_spec(docs)
    vols = [v for v in spec["volumes"] if "secret" in v]
    assert len(vols) == 1
    vol = vols[0]
    assert vol["secret"]["defaultMode"] == 0o400
    assert vol["secret"].get("optional") is False, "a missing Secret must stop the pod, not start it empty"
    assert not vol["secret"].get("items"), "every key of the Secret is a secret file"
    users = [c["name"] for c in all_containers(spec)
             for m in c.get("volumeMounts", []) if m["name"] == vol["name"]]
    assert users == ["keyward"], "only keyward mounts the secrets"
    mount = next(m for m in container(spec, "keyward")["volumeMounts"] if m["name"] == vol["name"])
    assert mount["readOnly"] is True
    cfg = k8s_config(docs)
    assert cfg["secrets"]["source"] == "file"
    assert cfg["secrets"]["dir"] == mount["mountPath"]
    assert spec["securityContext"]["fsGroup"] == spec["securityContext"]["runAsGroup"], (
        "fsGroup makes the 0400 files group-readable by keyward's group")
    tmpl = one(docs, "Deployment", "keyward")["spec"]["template"]
    assert "azure.workload.identity/use" not in tmpl["metadata"].get("labels", {})


def test_entra_overlay_changes_the_configuration_only(tmp_root):
    """overlays/keyvault-entra is the keyvault overlay with its ConfigMap replaced (not a
    second one beside it): every other object is the same, and the pod mounts the new one."""
    entra, _ = render_variant("keyvault-entra", tmp_root)
    keyvault, _ = render_variant("keyvault", tmp_root)
    assert len(by_kind(entra, "ConfigMap")) == 1
    entra_n, keyvault_n = normalized(entra), normalized(keyvault)
    assert entra_n.keys() == keyvault_n.keys()
    for key in entra_n:
        if key[0] != "ConfigMap":
            assert entra_n[key] == keyvault_n[key], f"{key} differs from the keyvault overlay's"
    cfg = k8s_config(entra)
    assert cfg["ingress"]["oauth"]["issuers"], "the mounted configuration has Entra ID"
    assert any(c.get("token_ids") for c in cfg["ingress"]["clients"])
    assert "oauth" not in k8s_config(keyvault)["ingress"]


def test_no_secret_manifest_holds_data():
    for path in files("*.y*ml", K8S):
        for d in load_yaml_docs(path):
            if d.get("kind") == "Secret":
                assert not d.get("data") and not d.get("stringData"), f"{rel(path)}: Secret with values"
