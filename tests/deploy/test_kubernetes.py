"""deploy/k8s: each overlay renders with `kubectl kustomize`, every rendered resource passes
`kubernetes-validate --strict`, and the RayCluster passes KubeRay's published CRD schema (vendored, made strict) with
its pod templates checked as Kubernetes PodTemplates. Plus what the service needs: probes on /healthz and /readyz,
only FACEWEAVE_* names that faceweave/serve/settings.py reads, GPU requests and a spot worker group."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import OVERLAY_IDS, OVERLAYS, render, run, tool

CRD_SCHEMA = Path(__file__).parent / "kuberay" / "rayclusters.ray.io-v1.schema.json"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests promise to work on (autoscaling/v2, policy/v1 ≥ 1.23)


def _docs(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields forbidden wherever it lists the fields (the API server would prune them
    silently; here a misspelt or made-up field fails)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _raycluster_errors(doc: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(_strict(json.loads(CRD_SCHEMA.read_text())))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_overlay_renders_and_passes_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    out = run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(rendered)])
    assert out.returncode == 0, out.stdout + out.stderr
    kinds = {d["kind"] for d in _docs(overlay)}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds
    passed = out.stdout.count(" passed for resource ")
    assert passed == len([d for d in _docs(overlay) if d["apiVersion"] != "ray.io/v1"]), out.stdout


def test_kubernetes_validate_strict_rejects_an_unknown_field(tmp_path: Path) -> None:
    docs = _docs("cpu")
    dep = _by_kind(docs, "Deployment")[0]
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/healthz"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(dep))
    out = run([tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(bad)])
    assert out.returncode != 0 and "httpGett" in out.stdout + out.stderr


def test_raycluster_matches_kuberays_crd_and_its_pod_templates_are_valid() -> None:
    import kubernetes_validate

    (cluster,) = _by_kind(_docs("gpu"), "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert _raycluster_errors(cluster) == []
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:  # the CRD embeds the pod template loosely in places; check it as Kubernetes would
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                        "template": group["template"]}  # fmt: skip
        kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)


def test_the_crd_check_rejects_a_misspelt_field() -> None:
    (cluster,) = _by_kind(_docs("gpu"), "RayCluster")
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["minReplica"] = 1
    assert any("minReplica" in e for e in _raycluster_errors(bad))
    bad = copy.deepcopy(cluster)
    bad["spec"]["autoscalerOptions"]["upscalingMode"] = "Eager"  # not in the CRD's enum
    assert any("upscalingMode" in e for e in _raycluster_errors(bad))


def test_raycluster_autoscales_gpu_workers_including_a_spot_group() -> None:
    (cluster,) = _by_kind(_docs("gpu"), "RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = {}
    for g in spec["workerGroupSpecs"]:
        (container,) = g["template"]["spec"]["containers"]
        if container["resources"]["limits"].get("nvidia.com/gpu") == "1":
            gpu_groups[g["groupName"]] = g
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] and g["maxReplicas"] > g["minReplicas"]
    assert len(gpu_groups) >= 2
    spot = [g for g in gpu_groups.values() if "spot" in json.dumps(g["template"]["spec"].get("nodeSelector", {}))]
    assert spot, "no worker group is pinned to spot nodes"
    tolerations = spot[0]["template"]["spec"]["tolerations"]
    assert "nvidia.com/gpu" in {t["key"] for t in tolerations} and any("spot" in json.dumps(t) for t in tolerations)
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_api_probes_resources_and_settings(overlay: str) -> None:
    docs = _docs(overlay)
    (dep,) = _by_kind(docs, "Deployment")
    (api,) = dep["spec"]["template"]["spec"]["containers"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["resources"]["requests"]["cpu"] and api["resources"]["requests"]["memory"]
    assert ("nvidia.com/gpu" in api["resources"]["limits"]) == (overlay == "gpu")
    env_sources = {e.get("configMapRef", e.get("secretRef", {})).get("name") for e in api["envFrom"]}
    assert env_sources == {"faceweave-config", "faceweave-secrets"}
    (ingress,) = _by_kind(docs, "Ingress")
    assert ingress["spec"]["tls"] and ingress["spec"]["tls"][0]["secretName"]
    routed = {p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert "/metrics" not in routed and "/v1" in routed
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (pdb,) = _by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert _by_kind(docs, "Secret") == []  # credentials are created with kubectl, never committed


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_configmap_names_only_settings_the_service_reads(overlay: str) -> None:
    pytest.importorskip("pydantic_settings", reason="the serve extra is not installed")
    from faceweave.serve.settings import ServiceSettings

    known = {f"FACEWEAVE_{name.upper()}" for name in ServiceSettings.model_fields} | {"FACEWEAVE_MODELS"}
    (config,) = _by_kind(_docs(overlay), "ConfigMap")
    unknown = set(config["data"]) - known
    assert not unknown, f"the service does not read {sorted(unknown)}"
    ServiceSettings.model_validate({k.removeprefix("FACEWEAVE_").lower(): v for k, v in config["data"].items()})
