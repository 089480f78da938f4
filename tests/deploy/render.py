"""The Kubernetes variants rendered: with ``kubectl kustomize`` or ``kustomize`` when
installed, a small built-in renderer otherwise; each variant once per session."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import yaml

from manifests import K8S, load_yaml_docs

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
    "keyvault-entra": {"resources": ["../overlays/keyvault-entra"]},
}


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
# (no hash suffix; behavior create, replace or merge), strategic-merge patches by name, JSON
# 6902 patches, images, namespace, labels. It covers what deploy/k8s uses; test_builtin_renderer_agrees_with_kustomize keeps it
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
        behavior = gen.get("behavior", "create")
        if behavior == "create":
            docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
            continue
        # replace / merge: a ConfigMap generated further down (a resource's generator).
        hits = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"]
                and d["metadata"].get("namespace") == gen.get("namespace")]
        assert len(hits) == 1, f"configMapGenerator {gen['name']} ({behavior}): {len(hits)} ConfigMaps to act on"
        assert behavior in ("replace", "merge"), f"configMapGenerator behavior {behavior}"
        hits[0]["data"] = data if behavior == "replace" else {**hits[0].get("data", {}), **data}
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
