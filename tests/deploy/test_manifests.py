"""deploy/ validates offline: Kubernetes schemas (kubernetes-validate), the CRDs'
structure, kustomize rendering, and the references between the objects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from gateway.config import GatewayConfig
from tests.deploy import kustomize
from tests.deploy.conftest import DEPLOY, OVERLAYS, container, one, pod_spec

# the oldest Kubernetes the manifests must still apply to, and the newest schemas known
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
TEMPLATES = sorted((DEPLOY / "jobs").glob("*.yaml")) + sorted((DEPLOY / "secrets").glob("*.yaml"))
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def k8s_errors(obj: dict[str, Any]) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in getattr(exc, "path", []))
            errors.append(f"{version} {obj['kind']}/{obj['metadata'].get('name')} {path}: "
                          f"{getattr(exc, 'message', str(exc))[:300]}")
    return errors


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Structural checks of the Prometheus Operator CRDs (not in the Kubernetes schemas)."""
    errs = []
    name = f"{obj['kind']}/{obj['metadata'].get('name')}"
    if obj.get("apiVersion") != "monitoring.coreos.com/v1":
        errs.append(f"{name}: apiVersion {obj.get('apiVersion')}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"].get("name", "")):
        errs.append(f"{name}: bad metadata.name")
    spec = obj.get("spec") or {}
    if obj["kind"] == "ServiceMonitor":
        if set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                        "podTargetLabels", "sampleLimit"}:
            errs.append(f"{name}: unknown spec keys {set(spec)}")
        if not (spec.get("selector") or {}).get("matchLabels"):
            errs.append(f"{name}: spec.selector.matchLabels required")
        if not spec.get("endpoints"):
            errs.append(f"{name}: spec.endpoints required")
        for ep in spec.get("endpoints", []):
            if set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels",
                          "relabelings", "metricRelabelings"}:
                errs.append(f"{name}: unknown endpoint keys {set(ep)}")
            if not isinstance(ep.get("port"), str):
                errs.append(f"{name}: endpoint port must be a Service port name")
            if not str(ep.get("path", "/metrics")).startswith("/"):
                errs.append(f"{name}: endpoint path")
            for k in ("interval", "scrapeTimeout"):
                if k in ep and not DURATION.match(ep[k]):
                    errs.append(f"{name}: endpoint {k} {ep[k]!r}")
    elif obj["kind"] == "PrometheusRule":
        if set(spec) != {"groups"} or not spec["groups"]:
            errs.append(f"{name}: spec.groups required (and alone)")
        group_names = [g.get("name") for g in spec.get("groups", [])]
        if len(set(group_names)) != len(group_names) or not all(group_names):
            errs.append(f"{name}: group names must be present and unique")
        for g in spec.get("groups", []):
            if set(g) - {"name", "interval", "rules"} or not g.get("rules"):
                errs.append(f"{name}: group {g.get('name')} keys {set(g)}")
            for r in g.get("rules", []):
                if ("alert" in r) == ("record" in r):
                    errs.append(f"{name}: rule needs exactly one of alert/record: {r}")
                if set(r) - {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}:
                    errs.append(f"{name}: rule keys {set(r)}")
                if not isinstance(r.get("expr"), str) or not r["expr"].strip():
                    errs.append(f"{name}: {r.get('alert')} expr must be a non-empty string")
                if "for" in r and not DURATION.match(r["for"]):
                    errs.append(f"{name}: {r.get('alert')} for {r['for']!r}")
                if "alert" in r:
                    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", r["alert"]):
                        errs.append(f"{name}: alert name {r['alert']!r}")
                    if (r.get("labels") or {}).get("severity") not in {"critical", "warning", "info"}:
                        errs.append(f"{name}: {r['alert']} needs severity critical|warning|info")
                    if not {"summary", "description"} <= set(r.get("annotations") or {}):
                        errs.append(f"{name}: {r['alert']} needs summary and description")
                    if not all(isinstance(v, str) for v in (r.get("labels") or {}).values()):
                        errs.append(f"{name}: {r['alert']} label values must be strings")
    else:
        errs.append(f"{name}: unknown CRD kind")
    return errs


def validate_any(obj: dict[str, Any]) -> list[str]:
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        return crd_errors(obj)
    return k8s_errors(obj)


# --- schemas ---------------------------------------------------------------------------

def test_every_rendered_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "PersistentVolumeClaim", "ServiceMonitor", "PrometheusRule", "Namespace"} <= kinds
    errors = [e for o in objs for e in validate_any(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_templates_validate(path: Path) -> None:
    docs = kustomize.load_all(path)
    assert docs
    errors = [e for d in docs for e in validate_any(d)]
    assert not errors, "\n".join(errors)


def test_validation_rejects_broken_objects() -> None:
    """The validators above do fail: a typo'd field, a wrong type, a bad CRD."""
    dep = kustomize.load_all(DEPLOY / "base" / "gateway-deployment.yaml")[0]
    typo = yaml.safe_load(yaml.safe_dump(dep))
    pod_spec(typo)["terminationGracePeriod"] = 60
    assert k8s_errors(typo)
    wrong = yaml.safe_load(yaml.safe_dump(dep))
    container(wrong, "gateway")["ports"][0]["containerPort"] = "eight thousand"
    assert k8s_errors(wrong)
    rule = kustomize.load_all(DEPLOY / "base" / "prometheusrule.yaml")[0]
    bad = yaml.safe_load(yaml.safe_dump(rule))
    del bad["spec"]["groups"][0]["rules"][0]["labels"]
    bad["spec"]["groups"][0]["rules"][1]["for"] = "ten minutes"
    assert len(crd_errors(bad)) == 2


# --- kustomize -------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_python_renderer_matches_kustomize(overlay: str) -> None:
    if kustomize.binary() is None:
        pytest.skip(kustomize.INSTALL_HINT)
    path = DEPLOY / "overlays" / overlay
    ours = {kustomize.key(o): o for o in kustomize.render_python(path)}
    real = {kustomize.key(o): o for o in kustomize.render_binary(path)}
    assert set(ours) == set(real)
    for k in real:
        assert ours[k] == real[k], k


def test_strategic_merge_semantics() -> None:
    base = {"spec": {"replicas": 1, "template": {"spec": {"containers": [
        {"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}, {"name": "b", "image": "y"}]}}}}
    patch = {"spec": {"replicas": None, "template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "B", "value": "2"}], "args": ["--x"]}]}}}}
    out = kustomize.strategic_merge(base, patch)
    assert "replicas" not in out["spec"]
    a, b = out["spec"]["template"]["spec"]["containers"]
    assert a == {"name": "a", "image": "x", "args": ["--x"],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    assert b == {"name": "b", "image": "y"}
    assert kustomize.image_name("registry:5000/a/b:1.2") == "registry:5000/a/b"
    assert kustomize.image_name("vllm/vllm-openai@sha256:abc") == "vllm/vllm-openai"


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(kustomize.Unsupported):
        kustomize.render_python(tmp_path)


def test_overlays_differ_where_they_should() -> None:
    dev, prod = (kustomize.render_python(DEPLOY / "overlays" / o) for o in OVERLAYS)
    for objs, ns in ((dev, "tuneloop-dev"), (prod, "tuneloop")):
        assert one(objs, "Namespace", ns)
        assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {ns}
    dev_hpa, prod_hpa = (one(o, "HorizontalPodAutoscaler", "tuneloop-gateway")["spec"] for o in (dev, prod))
    assert (dev_hpa["minReplicas"], dev_hpa["maxReplicas"]) == (1, 2)
    assert prod_hpa["minReplicas"] >= 3 and prod_hpa["maxReplicas"] > prod_hpa["minReplicas"]
    assert one(prod, "Deployment", "tuneloop-vllm")["spec"]["replicas"] == 2
    assert one(dev, "Deployment", "tuneloop-vllm")["spec"]["replicas"] == 1
    dev_gw, prod_gw = (container(one(o, "Deployment", "tuneloop-gateway"), "gateway") for o in (dev, prod))
    assert dev_gw["image"] == "ghcr.io/tuneloop/tuneloop:main"
    assert prod_gw["image"] == "ghcr.io/tuneloop/tuneloop:0.1.0"
    assert _cpu(prod_gw["resources"]["requests"]["cpu"]) > _cpu(dev_gw["resources"]["requests"]["cpu"])
    # the patch merged into the container, it did not replace it
    assert dev_gw["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def _cpu(v: str) -> float:
    return float(v[:-1]) / 1000 if str(v).endswith("m") else float(v)


# --- what the objects must say -----------------------------------------------------------

def test_images_are_pinned(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        if o["kind"] in POD_KINDS:
            for c in pod_spec(o)["containers"]:
                tag = c["image"][len(kustomize.image_name(c["image"])):]
                assert tag and tag not in (":latest",), c["image"]


def test_gateway_deployment(objects: list[dict[str, Any]]) -> None:
    dep = one(objects, "Deployment", "tuneloop-gateway")
    spec = pod_spec(dep)
    assert "replicas" not in dep["spec"], "the HPA owns the gateway's replica count"
    assert spec["terminationGracePeriodSeconds"] >= 40
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    c = container(dep, "gateway")
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    pre = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre[0] == "sleep" and 0 < int(pre[1]) < spec["terminationGracePeriodSeconds"] - 30, \
        "preStop sleep + uvicorn's 30 s graceful shutdown must fit in the grace period"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # serve binds all interfaces on the port the probes and the Service use
    args = c["args"]
    assert args[0] == "serve" and args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["http"] == port == 8000
    env = {e["name"]: e for e in c["env"]}
    assert env["TUNELOOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tuneloop-database", "key": "url"}
    assert "value" not in env["TUNELOOP_DATABASE_URL"]


def test_gateway_config_is_valid_and_points_at_services(objects: list[dict[str, Any]]) -> None:
    dep = one(objects, "Deployment", "tuneloop-gateway")
    c = container(dep, "gateway")
    config_path = Path(c["args"][c["args"].index("--config") + 1])
    mount = next(m for m in c["volumeMounts"] if Path(m["mountPath"]) == config_path.parent)
    volume = next(v for v in pod_spec(dep)["volumes"] if v["name"] == mount["name"])
    cm = one(objects, "ConfigMap", volume["configMap"]["name"])
    raw = yaml.safe_load(cm["data"][config_path.name])
    assert "database_url" not in raw, "the database URL comes from the Secret, not the ConfigMap"
    cfg = GatewayConfig.model_validate(raw)  # the gateway's own schema
    for name, model in cfg.models.items():
        assert all(r.target in cfg.targets for r in model.routes), name
        assert all(f in cfg.models for f in model.fallbacks), name
    assert any(len(m.routes) > 1 for m in cfg.models.values()), "one alias shows a canary"
    assert any(m.fallbacks for m in cfg.models.values())
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    urls = [u for t in cfg.targets.values() if t.kind == "vllm" for u in t.base_urls] + [cfg.redis_url]
    assert urls and None not in urls
    for url in urls:
        u = urlparse(url)
        assert u.hostname in services, f"{url}: no Service {u.hostname}"
        assert u.port in [p["port"] for p in services[u.hostname]["spec"]["ports"]], url
    env = {e["name"] for e in c["env"]}
    for t in cfg.targets.values():
        if t.api_key_env:
            assert t.api_key_env in env, f"{t.api_key_env} is not set in the gateway pods"


def test_references_resolve(objects: list[dict[str, Any]]) -> None:
    """Selectors select pods; ConfigMaps, PVCs and HPA targets exist; required Secrets have
    a template in deploy/secrets/; $(VAR) in args is defined."""
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    templated = {d["metadata"]["name"] for p in (DEPLOY / "secrets").glob("*.yaml") for d in kustomize.load_all(p)}
    pods = [o for o in objects if o["kind"] in POD_KINDS]
    pod_labels = [o["spec"]["template"]["metadata"]["labels"] for o in pods]
    for o in objects:
        sel = None
        if o["kind"] == "Service":
            sel = o["spec"]["selector"]
        elif o["kind"] in ("PodDisruptionBudget", *POD_KINDS) and "selector" in o["spec"]:
            sel = o["spec"]["selector"]["matchLabels"]
        if sel is not None:
            assert any(sel.items() <= lab.items() for lab in pod_labels), f"{o['metadata']['name']} selects nothing"
        if o["kind"] == "ServiceMonitor":
            ms = o["spec"]["selector"]["matchLabels"]
            svcs = [s for s in objects if s["kind"] == "Service" and ms.items() <= s["metadata"]["labels"].items()]
            assert len(svcs) == 1, o["metadata"]["name"]
            ports = {p["name"] for p in svcs[0]["spec"]["ports"]}
            assert all(ep["port"] in ports for ep in o["spec"]["endpoints"])
        if o["kind"] == "HorizontalPodAutoscaler":
            ref = o["spec"]["scaleTargetRef"]
            assert (ref["kind"], ref["name"]) in names
    for o in pods:
        spec = pod_spec(o)
        for v in spec.get("volumes", []):
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in names
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in names
        for c in spec["containers"]:
            env = c.get("env", [])
            for e in env:
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm = one(objects, "ConfigMap", ref["configMapKeyRef"]["name"])
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):
                    assert ref["secretKeyRef"]["name"] in templated, ref
            defined = {e["name"] for e in env}
            for arg in c.get("command", []) + c.get("args", []):
                for var in re.findall(r"\$\((\w+)\)", arg):
                    assert var in defined, f"{c['name']}: $({var}) is not defined"
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec.get("volumes", [])}


def test_vllm_deployment(objects: list[dict[str, Any]]) -> None:
    dep = one(objects, "Deployment", "tuneloop-vllm")
    spec = pod_spec(dep)
    c = container(dep, "vllm")
    assert c["command"] == ["vllm", "serve"]
    args = c["args"]
    assert args[0] == "$(BASE_MODEL)"
    flags = dict(a.removeprefix("--").split("=", 1) if "=" in a else (a.removeprefix("--"), True) for a in args[1:])
    assert flags["enable-lora"] is True
    assert (flags["max-loras"], flags["max-cpu-loras"], flags["max-lora-rank"]) == ("8", "64", "16")
    assert int(flags["max-cpu-loras"]) >= int(flags["max-loras"])
    env = {e["name"]: e for e in c["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"]["value"] == "/adapters"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/adapters")
    claim = next(v for v in spec["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
    pvc = one(objects, "PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    svc = one(objects, "Service", "tuneloop-vllm")
    assert svc["spec"]["ports"][0]["targetPort"] in [p["name"] for p in c["ports"]]


def test_finetune_job_writes_to_the_adapters_volume_vllm_reads(objects: list[dict[str, Any]]) -> None:
    job = kustomize.load_all(DEPLOY / "jobs" / "finetune.yaml")[0]
    assert job["kind"] == "Job" and job["metadata"]["generateName"]
    spec = pod_spec(job)
    c = container(job, "finetune")
    assert c["command"] == ["tuneloop"] and c["args"][0] == "finetune"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and spec["nodeSelector"]
    assert spec["restartPolicy"] == "Never"
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/adapters")
    assert not mount.get("readOnly")
    claim = next(v for v in spec["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
    vllm = one(objects, "Deployment", "tuneloop-vllm")
    vllm_claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_spec(vllm)["volumes"]
                   if "persistentVolumeClaim" in v}
    assert claim in vllm_claims
    output = next(a for a in c["args"] if a.startswith("--output="))
    assert output.startswith("--output=/adapters/")
    base_ref = {e["name"]: e for e in c["env"]}["BASE_MODEL"]["valueFrom"]["configMapKeyRef"]
    vllm_ref = {e["name"]: e for e in container(vllm, "vllm")["env"]}["BASE_MODEL"]["valueFrom"]["configMapKeyRef"]
    assert base_ref == vllm_ref, "adapters must be trained on the model vLLM serves"
    # what the Job refers to exists in every overlay (it is created into one of them)
    test_references_resolve([*objects, {**job, "metadata": {**job["metadata"], "name": "finetune"}}])


def test_training_runner_trains_what_the_api_queues_onto_the_volume_vllm_reads(objects: list[dict[str, Any]]) -> None:
    """Jobs created through any gateway replica train on the runner's GPU (never in a gateway pod),
    on the base vLLM serves, into the folder vLLM's resolver reads."""
    gateway = container(one(objects, "Deployment", "tuneloop-gateway"), "gateway")
    assert {e["name"]: e.get("value") for e in gateway["env"]}["TUNELOOP_TRAINING_RUNNER"] == "0"
    dep = one(objects, "Deployment", "tuneloop-training-runner")
    spec, c = pod_spec(dep), container(dep, "runner")
    assert c["command"] == ["tuneloop"] and c["args"][:2] == ["jobs", "runner"] and "--resume" in c["args"]
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and spec["nodeSelector"]
    env = {e["name"]: e for e in c["env"]}
    assert env["TUNELOOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "tuneloop-database", "key": "url"}
    # the runner reads the gateway's config (its base_models) from the same ConfigMap
    config_path = Path(c["args"][c["args"].index("--config") + 1])
    mounts = {Path(m["mountPath"]): m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    gw_spec = pod_spec(one(objects, "Deployment", "tuneloop-gateway"))
    gw_cm = next(v["configMap"]["name"] for v in gw_spec["volumes"] if "configMap" in v)
    assert volumes[mounts[config_path.parent]["name"]]["configMap"]["name"] == gw_cm
    cfg = GatewayConfig.model_validate(yaml.safe_load(one(objects, "ConfigMap", gw_cm)["data"][config_path.name]))
    served = one(objects, "ConfigMap", "tuneloop-vllm")["data"]["base-model"]
    assert served in cfg.base_models, "jobs name the base by the name vLLM serves it under"
    base = cfg.base_models[served]
    assert base.path == served and all(t in cfg.targets for t in base.targets)
    assert base.adapters_dir and not mounts[Path(base.adapters_dir)].get("readOnly")
    claim = volumes[mounts[Path(base.adapters_dir)]["name"]]["persistentVolumeClaim"]["claimName"]
    vllm = one(objects, "Deployment", "tuneloop-vllm")
    vllm_mounts = {m["name"]: m["mountPath"] for m in container(vllm, "vllm")["volumeMounts"]}
    vllm_claim = {v["persistentVolumeClaim"]["claimName"]: vllm_mounts[v["name"]] for v in pod_spec(vllm)["volumes"]
                  if "persistentVolumeClaim" in v}
    resolver = {e["name"]: e.get("value") for e in container(vllm, "vllm")["env"]}["VLLM_LORA_RESOLVER_CACHE_DIR"]
    assert vllm_claim.get(claim) == resolver == base.adapters_dir


def test_secret_templates_are_placeholders() -> None:
    for path in (DEPLOY / "secrets").glob("*.yaml"):
        for doc in kustomize.load_all(path):
            assert doc["kind"] == "Secret"
            assert all("REPLACE_ME" in v for v in doc["stringData"].values()), path
    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    assert not any("secret" in r for r in base["resources"]), "templates must not be applied"
