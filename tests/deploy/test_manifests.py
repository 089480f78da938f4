"""Checks of everything under deploy/: Dockerfiles, Bicep, Container Apps YAML, azd, Kubernetes.

Nothing here deploys or builds an image: there is no Docker engine, Azure or cluster on the
machines these run on. The checks are the ones a reviewer would make by reading, made
mechanical:

* every YAML and JSON file parses;
* the Kubernetes overlays render (``kubectl kustomize`` or ``kustomize`` when installed, a
  small built-in renderer otherwise) and validate against the Kubernetes JSON schemas
  (kubernetes-validate, strict, 1.30 and the newest it ships);
* security invariants: no secret values anywhere, the backend never exposed, non-root and
  locked-down containers, least-privilege role assignments, vault protection;
* the ports and addresses agree with keyward's configuration;
* every embedded keyward.toml parses and, when a keyward binary is at hand, passes
  ``keyward check-config``.

Run: python3 -m venv /tmp/dv && /tmp/dv/bin/pip install -q -r tests/deploy/requirements.txt
     && /tmp/dv/bin/pytest -q tests/deploy
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
import warnings
from collections import Counter
from pathlib import Path

import pytest
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
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "f25e0fa2-a7c8-4377-a976-54943a77a395": "Key Vault Contributor",
    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603": "Key Vault Crypto Officer",
}

# Rendered Kubernetes variants: overlay directories, and compositions with components.
K8S_VARIANTS = {
    "keyvault": {"resources": ["../overlays/keyvault"]},
    "secret-volume": {"resources": ["../overlays/secret-volume"]},
    "keyvault+cilium-fqdn": {
        "resources": ["../overlays/keyvault"],
        "components": ["../components/cilium-fqdn"],
    },
    "secret-volume+legacy-sidecar": {
        "resources": ["../overlays/secret-volume"],
        "components": ["../components/legacy-sidecar"],
    },
}
# Kubernetes versions each variant is validated against (the schemas kubernetes-validate ships).
SCHEMA_VERSIONS = {
    "keyvault": ["1.30", "1.33"],
    "secret-volume": ["1.30", "1.33"],
    "keyvault+cilium-fqdn": ["1.30"],
    "secret-volume+legacy-sidecar": ["1.28"],
}
CRD_KINDS = {"CiliumNetworkPolicy"}

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
# Helpers
# --------------------------------------------------------------------------------------------


def files(pattern: str, under: Path = DEPLOY) -> list[Path]:
    return sorted(p for p in under.rglob(pattern) if ".tmp" not in p.parts)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomize_command() -> list[str] | None:
    # DEPLOY_TESTS_BUILTIN_KUSTOMIZE=1 exercises the built-in renderer where kubectl exists.
    if os.environ.get("DEPLOY_TESTS_BUILTIN_KUSTOMIZE") == "1":
        return None
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def materialize_variant(tmp: Path, name: str) -> Path:
    """Copies deploy/k8s and writes the variant's kustomization beside base/ and overlays/."""
    tree = tmp / "k8s"
    if not tree.exists():
        shutil.copytree(K8S, tree)
    vdir = tree / f"variant-{name.replace('+', '-')}"
    vdir.mkdir(exist_ok=True)
    body = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    body.update(K8S_VARIANTS[name])
    (vdir / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return vdir


def render_with_tool(kdir: Path) -> list[dict]:
    cmd = kustomize_command()
    assert cmd is not None
    out = subprocess.run(cmd + [str(kdir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{' '.join(cmd)} {kdir} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d is not None]


# A small kustomize, for machines without kubectl: resources, components, configMapGenerator
# (no hash suffix), strategic-merge patches by name, JSON 6902 patches, images, namespace,
# labels. It covers what deploy/k8s uses; test_builtin_renderer_agrees_with_kustomize keeps it
# honest where kubectl exists.

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
MERGE_KEYS = {"volumeMounts": "mountPath", "ports": "containerPort"}


def smp_merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = smp_merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        mk = MERGE_KEYS.get(key, "name")
        if all(isinstance(i, dict) and mk in i for i in base + patch):
            out = [copy.deepcopy(i) for i in base]
            for item in patch:
                match = [i for i, b in enumerate(out) if b[mk] == item[mk]]
                if match:
                    out[match[0]] = smp_merge(out[match[0]], item, None)
                else:
                    out.append(copy.deepcopy(item))
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


def json_pointer(doc, path: str):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    return parent, parts[-1]


def json6902(doc: dict, ops: list[dict]) -> dict:
    doc = copy.deepcopy(doc)
    for op in ops:
        parent, last = json_pointer(doc, op["path"])
        idx = int(last) if isinstance(parent, list) else last
        if op["op"] == "test":
            assert parent[idx] == op["value"], f"json6902 test failed at {op['path']}"
        elif op["op"] == "remove":
            del parent[idx]
        elif op["op"] in ("add", "replace"):
            if isinstance(parent, list) and op["op"] == "add":
                parent.insert(idx, op["value"])
            else:
                parent[idx] = op["value"]
        elif op["op"] == "move":
            src_parent, src_last = json_pointer(doc, op["from"])
            value = src_parent.pop(int(src_last) if isinstance(src_parent, list) else src_last)
            parent, last = json_pointer(doc, op["path"])
            if isinstance(parent, list):
                parent.insert(int(last), value)
            else:
                parent[last] = value
        else:
            raise AssertionError(f"json6902 op {op['op']} not supported by the built-in renderer")
    return doc


def apply_patches(docs: list[dict], kdir: Path, patches: list[dict]) -> list[dict]:
    for p in patches:
        if "path" in p:
            for patch in load_yaml_docs(kdir / p["path"]):
                hits = [
                    i
                    for i, d in enumerate(docs)
                    if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
                ]
                assert hits, f"patch {p['path']} matches no resource"
                for i in hits:
                    docs[i] = smp_merge(docs[i], patch)
        else:
            target = p["target"]
            ops = yaml.safe_load(p["patch"])
            hits = [
                i
                for i, d in enumerate(docs)
                if d["kind"] == target["kind"] and d["metadata"]["name"] == target.get("name")
            ]
            assert hits, f"inline patch for {target} matches no resource"
            for i in hits:
                docs[i] = json6902(docs[i], ops)
    return docs


def render_builtin(kdir: Path) -> list[dict]:
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for r in k.get("resources", []):
        path = (kdir / r).resolve()
        docs += render_builtin(path) if path.is_dir() else load_yaml_docs(path)
    for gen in k.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.partition("=") if "=" in f else (Path(f).name, "", f)
            data[key] = (kdir / src).read_text()
        meta = {"name": gen["name"]}
        if "namespace" in gen:
            meta["namespace"] = gen["namespace"]
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
    docs = apply_patches(docs, kdir, k.get("patches", []))
    for c in k.get("components", []):
        cdir = (kdir / c).resolve()
        comp = yaml.safe_load((cdir / "kustomization.yaml").read_text())
        for r in comp.get("resources", []):
            docs += load_yaml_docs(cdir / r)
        docs = apply_patches(docs, cdir, comp.get("patches", []))
    for img in k.get("images", []):
        for d in docs:
            spec = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                name, _, _ = c["image"].partition(":")
                if name == img["name"]:
                    c["image"] = f"{img.get('newName', name)}:{img.get('newTag', 'latest')}"
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    for label in k.get("labels", []):
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(label["pairs"])
    return docs


_RENDER_CACHE: dict[str, tuple[list[dict], str]] = {}


def render_variant(name: str, tmp_root: Path) -> tuple[list[dict], str]:
    if name not in _RENDER_CACHE:
        vdir = materialize_variant(tmp_root, name)
        if kustomize_command():
            _RENDER_CACHE[name] = (render_with_tool(vdir), " ".join(kustomize_command()))
        else:
            _RENDER_CACHE[name] = (render_builtin(vdir), "built-in renderer")
    return copy.deepcopy(_RENDER_CACHE[name][0]), _RENDER_CACHE[name][1]


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("deploy")


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


def port_number(c: dict, port) -> int:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    assert port in named, f"named port {port} not declared by container {c['name']}"
    return named[port]


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
# Parsing and rendering
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", files("*.y*ml"), ids=rel)
def test_every_yaml_file_parses(path):
    docs = load_yaml_docs(path)
    assert docs, f"{rel(path)} is empty"
    for d in docs:
        assert isinstance(d, dict), f"{rel(path)}: a document is not a mapping"


@pytest.mark.parametrize("path", files("*.json"), ids=rel)
def test_every_json_file_parses(path):
    json.loads(path.read_text())


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
# Kubernetes invariants
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


def test_images_run_keyward_and_the_backend_as_different_uids():
    def user(crate):
        users = [rest for word, rest in dockerfile_instructions(DOCKERFILES[crate]) if word == "USER"]
        return users[-1].split(":")[0]
    assert user("keyward") != user("mcp-backend")


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


def test_no_secret_manifest_holds_data():
    for path in files("*.y*ml", K8S):
        for d in load_yaml_docs(path):
            if d.get("kind") == "Secret":
                assert not d.get("data") and not d.get("stringData"), f"{rel(path)}: Secret with values"


# --------------------------------------------------------------------------------------------
# keyward configurations
# --------------------------------------------------------------------------------------------

SAMPLE = {
    "vault": "https://kv-sample.vault.azure.net/",
    "client_id": "11111111-2222-3333-4444-555555555555",
    "upstream": "https://apim-sample.azure-api.net/biotrackr/",
}


def render_aca_template(clients: list[str]) -> str:
    """What modules/app.bicep does with ../keyward.toml (the test below checks the Bicep)."""
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


# --------------------------------------------------------------------------------------------
# Container Apps YAML
# --------------------------------------------------------------------------------------------

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


def test_collector_config():
    cfg = yaml.safe_load((ACA / "otel-collector.yaml").read_text())
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"].startswith("127.0.0.1:")
    targets = cfg["receivers"]["prometheus"]["config"]["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"127.0.0.1:{ADMIN_PORT}"]
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
    assert "attributes/drop-credentials" in cfg["service"]["pipelines"]["traces"]["processors"]


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


def test_bicep_module_calls_pass_the_right_params():
    main = (ACA / "main.bicep").read_text()
    for m in re.finditer(r"^module (\w+) '([^']+)' = (?:if \([^\n]*\) )?", main, re.M):
        body = block_after(main, m.end())
        params_at = body.index("params:")
        params = block_after(body, params_at)
        passed = set(re.findall(r"^\s{4}(\w+):", params, re.M))
        declared, required = module_params(ACA / m.group(2))
        assert passed <= declared, f"module {m.group(1)}: unknown params {passed - declared}"
        assert required <= passed, f"module {m.group(1)}: missing params {required - passed}"
    # Module outputs used by main exist.
    for m in re.finditer(r"\b(\w+)\.outputs\.(\w+)", main):
        mod = re.search(rf"^module {m.group(1)} '([^']+)'", main, re.M)
        assert mod, f"{m.group(1)} is not a module"
        outputs = re.findall(r"^output (\w+) ", (ACA / mod.group(1)).read_text(), re.M)
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
    assert len(assignments) == 2
    granted = set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text))
    role_vars = dict(re.findall(r"^var (\w+RoleId) = '([0-9a-f-]{36})'", text, re.M))
    assert set(role_vars.values()) == {SECRETS_USER_ROLE, ACR_PULL_ROLE}, role_vars
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
    for placeholder in ("# {{CLIENTS}}", "{{APIM_UPSTREAM}}", "{{VAULT_URL}}", "{{IDENTITY_CLIENT_ID}}"):
        assert f"'{placeholder}'" in text, f"Bicep does not replace {placeholder}"
        assert placeholder in template, f"keyward.toml lacks {placeholder}"
    assert re.search(r"secret = \"mcp-client-\$\{id\}\"", text), "client secrets are mcp-client-<id>"
    assert "loadTextContent('../otel-collector.yaml')" in text


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
# azd, hook, Dockerfiles
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


DOCKERFILES = {"keyward": DOCKER / "keyward.Dockerfile", "mcp-backend": DOCKER / "mcp-backend.Dockerfile"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("crate", DOCKERFILES)
def test_dockerfile(crate):
    path = DOCKERFILES[crate]
    ins = dockerfile_instructions(path)
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) == 2, "multi-stage: a builder and a runtime"
    assert froms[0].startswith("rust:1-bookworm AS "), froms[0]
    assert froms[1].startswith("gcr.io/distroless/cc-debian12:nonroot"), froms[1]
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert f"cargo build --release --locked -p {crate}" in runs
    # The crate exists under that name in the workspace.
    manifests = [ROOT / d / "Cargo.toml" for d in ("proxy", "mcp-backend")]
    names = [re.search(r'^name = "([^"]+)"', m.read_text(), re.M).group(1) for m in manifests]
    assert crate in names
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime user is not root"
    exposed = {int(p) for word, rest in ins if word == "EXPOSE" for p in rest.split()}
    assert exposed == ({KEYWARD_PORT, ADMIN_PORT} if crate == "keyward" else set())
    for word, rest in ins:
        if word in ("ARG", "ENV"):
            for name in re.findall(r"(\w+)=", rest) or [rest.split("=")[0].split()[0]]:
                assert not secretish(name), f"{word} {name}: no secret in a layer"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|key|env)\b|secrets?/", rest), f"{word} {rest}"
    assert ("HEALTHCHECK", "NONE") in ins, "no curl in distroless: the orchestrator's probes are the checks"
    assert "probe" in path.read_text()
    if crate == "keyward":
        assert "/livez" in path.read_text() and "/readyz" in path.read_text()
    if crate == "mcp-backend":
        env = " ".join(rest for word, rest in ins if word == "ENV")
        assert f"MCP_BACKEND_LISTEN={BACKEND_LISTEN}" in env and f"HEALTH_API_URL={HEALTH_API_URL}" in env
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.is_file()
    lines = ignore.read_text().splitlines()
    assert "*" in lines and "**/target/" in lines


@pytest.mark.parametrize("crate", DOCKERFILES)
def test_hadolint(crate):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    out = subprocess.run([hadolint, str(DOCKERFILES[crate])], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# --------------------------------------------------------------------------------------------
# No secret values anywhere under deploy/
# --------------------------------------------------------------------------------------------

ALL_DEPLOY_FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and ".tmp" not in p.parts)


@pytest.mark.parametrize("path", ALL_DEPLOY_FILES, ids=rel)
def test_no_secret_values(path):
    text = path.read_text()
    assert not secret_looking_tokens(text), f"{rel(path)}: {secret_looking_tokens(text)}"
    for marker in ("-----BEGIN", "AccountKey=", "InstrumentationKey=", "SharedAccessSignature",
                   "sig=", "client_secret", "ClientSecret"):
        assert marker not in text, f"{rel(path)} contains {marker}"
    if path.suffix in (".yaml", ".yml"):
        for d in load_yaml_docs(path):
            for env in walk_env_lists(d):
                for e in env:
                    if secretish(e.get("name", "")):
                        assert "value" not in e, f"{rel(path)}: {e['name']} has a literal value"


def walk_env_lists(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "env" and isinstance(v, list):
                yield v
            yield from walk_env_lists(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_env_lists(v)


def test_secret_scanner_catches_a_planted_key():
    """The scanner above is not vacuous."""
    planted = "apim_key = 'q7Xb2R9mZt4LwP8vNc3K6yHs1JdF5gAe'\n"
    assert secret_looking_tokens(planted)
    assert not secret_looking_tokens("image: myregistry.azurecr.io/keyward:0.1.0 vault kv-example")
