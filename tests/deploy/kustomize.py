"""Render a kustomization the way ``kustomize build`` does, for the subset deploy/ uses.

A real binary is preferred when there is one (``kustomize build`` or ``kubectl kustomize``);
without one, ``render_python`` does it here so the suite runs on a bare machine. The test
suite renders every overlay both ways when a binary exists and requires the same objects,
so this renderer cannot drift from kustomize silently.

Supported: ``resources`` (files and directories), ``namespace``, ``labels`` (metadata only),
``images``, ``replicas`` and ``patches`` given by ``path`` (strategic merge, matched by kind
and name). Anything else raises ``Unsupported`` instead of being rendered wrongly.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "RuntimeClass"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}
# strategic-merge keys of the lists deploy/ patches; other lists are replaced, as kustomize
# does for lists without a patch merge key
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name",
              "tolerations": None}
INSTALL_HINT = ("no kustomize binary: `kubectl kustomize` (kubectl >= 1.14) or `kustomize` from "
                "https://github.com/kubernetes-sigs/kustomize/releases; the Python renderer is used")


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def load_all(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def binary() -> list[str] | None:
    """The command that renders a directory with a real kustomize, or None."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


def render_binary(directory: Path) -> list[Obj]:
    cmd = binary()
    if cmd is None:
        raise RuntimeError(INSTALL_HINT)
    out = subprocess.run([*cmd, str(directory)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} {directory} failed: {out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render(directory: Path) -> list[Obj]:
    """Render with the real binary when present, else in Python."""
    return render_binary(directory) if binary() else render_python(directory)


def render_python(directory: Path) -> list[Obj]:
    directory = Path(directory)
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text()) or {}
    unknown = set(k) - KNOWN_KEYS
    if unknown:
        raise Unsupported(f"{kfile}: {sorted(unknown)}")

    objs: list[Obj] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        objs.extend(render_python(path) if path.is_dir() else load_all(path))
    _check_unique(objs, kfile)

    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{kfile}: patch {patch} (only `path:` strategic merges)")
        for p in load_all(directory / patch["path"]):
            target = _find(objs, p)
            merged = strategic_merge(target, p)
            target.clear()
            target.update(merged)

    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]

    for entry in k.get("labels", []):
        if set(entry) - {"pairs"} and (entry.get("includeSelectors") or entry.get("includeTemplates")):
            raise Unsupported(f"{kfile}: labels with includeSelectors/includeTemplates")
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(entry["pairs"])

    for rep in k.get("replicas", []):
        hits = [o for o in objs if o["kind"] in SCALABLE and o["metadata"]["name"] == rep["name"]]
        if not hits:
            raise Unsupported(f"{kfile}: replicas for unknown {rep['name']}")
        for o in hits:
            o["spec"]["replicas"] = rep["count"]

    for img in k.get("images", []):
        if set(img) - {"name", "newName", "newTag", "digest"}:
            raise Unsupported(f"{kfile}: image entry {img}")
        for container in _containers(objs):
            if image_name(container["image"]) == img["name"]:
                name = img.get("newName", img["name"])
                tag = _tag_part(container["image"])
                if "newTag" in img:
                    tag = f":{img['newTag']}"
                if "digest" in img:
                    tag = f"@{img['digest']}"
                container["image"] = name + tag
    return objs


def image_name(image: str) -> str:
    """The image without tag or digest (a registry port is not a tag)."""
    base = image.split("@", 1)[0]
    slash = base.rfind("/")
    colon = base.rfind(":")
    return base[:colon] if colon > slash else base


def _tag_part(image: str) -> str:
    return image[len(image_name(image)):]


def _containers(objs: list[Obj]) -> list[Obj]:
    found = []
    for o in objs:
        spec = o.get("spec") or {}
        pod = None
        if o["kind"] == "Pod":
            pod = spec
        elif o["kind"] == "CronJob":
            pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        elif "template" in spec:
            pod = spec["template"].get("spec")
        if pod:
            found.extend(pod.get("containers", []) + pod.get("initContainers", []))
    return found


def key(o: Obj) -> tuple[str, str, str]:
    return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]


def _check_unique(objs: list[Obj], where: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for o in objs:
        if key(o) in seen:
            raise ValueError(f"{where}: duplicate {key(o)}")
        seen.add(key(o))


def _find(objs: list[Obj], patch: Obj) -> Obj:
    hits = [o for o in objs if o["kind"] == patch["kind"]
            and o["metadata"]["name"] == patch["metadata"]["name"]]
    if len(hits) != 1:
        raise ValueError(f"patch {patch['kind']}/{patch['metadata']['name']} matches {len(hits)} objects")
    return hits[0]


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    """Strategic merge patch of plain fields: maps merge, null deletes, lists of known
    kinds merge by their key, other lists are replaced."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise Unsupported(f"patch directive in {patch}")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = strategic_merge(base.get(k), v, k)
        return out
    if isinstance(patch, list):
        mkey = MERGE_KEYS.get(field or "")
        if mkey is None or not isinstance(base, list):
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        for item in patch:
            idx = next((i for i, b in enumerate(out) if b.get(mkey) == item.get(mkey)), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = strategic_merge(out[idx], item)
        return out
    return copy.deepcopy(patch)
