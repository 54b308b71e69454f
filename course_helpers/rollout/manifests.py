"""The same canary on Kubernetes: an Argo Rollouts ``Rollout`` and a Flagger ``Canary``.

Both are custom resources whose schemas are not among Kubernetes' built-in ones, so
:func:`validate` checks what the offline schemas of lesson 04 cover (the pod template, the
Deployment and Service Flagger targets) and the custom resources' structure here.
"""

from __future__ import annotations

from typing import Any

from ..deploy import manifests as k8s
from ..deploy.spec import DeploymentSpec
from ..errors import CourseError
from .decision import Thresholds, parse_steps


#: where pods reach the registry in these examples (an in-cluster MLflow service)
TRACKING_URI = "http://mlflow:5000"


def _spec(name: str, model_uri: str) -> DeploymentSpec:
    import dataclasses

    return dataclasses.replace(DeploymentSpec.many_small(model_uri, replicas=2), name=name)


def argo_rollout(name: str, model_uri: str, steps: list[int] | str = "5,25,50,100",
                 interval_s: int = 60, thresholds: Thresholds = Thresholds(),
                 image: str = k8s.DEFAULT_IMAGE) -> list[dict[str, Any]]:
    """A ``Rollout`` (setWeight / analysis / pause steps, as the local controller does) and its
    ``AnalysisTemplate`` (Prometheus queries on the canary's error ratio and p95)."""
    steps = parse_steps(steps)
    spec = _spec(name, model_uri)
    dep = k8s.deployment(spec, image=image, tracking_uri=TRACKING_URI)
    rollout_steps: list[dict[str, Any]] = []
    for w in steps[:-1]:
        rollout_steps += [{"setWeight": w}, {"pause": {"duration": f"{interval_s}s"}},
                          {"analysis": {"templates": [{"templateName": f"{name}-health"}]}}]
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "labels": dep["metadata"]["labels"]},
        "spec": {"replicas": spec.replicas, "selector": dep["spec"]["selector"],
                 "template": dep["spec"]["template"],
                 "strategy": {"canary": {"steps": rollout_steps}}}}
    sel = f'app="{name}",rollouts_pod_template_hash="{{{{args.canary-hash}}}}"'
    analysis = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
        "metadata": {"name": f"{name}-health"},
        "spec": {"args": [{"name": "canary-hash"}], "metrics": [
            {"name": "error-ratio", "interval": f"{interval_s}s",
             "failureLimit": 0,
             "successCondition": f"result[0] <= {thresholds.max_error_ratio}",
             "provider": {"prometheus": {"address": "http://prometheus:9090", "query":
                 f'sum(rate(mlops_requests_total{{{sel},status=~"5.."}}[1m])) / '
                 f"sum(rate(mlops_requests_total{{{sel}}}[1m]))"}}},
            {"name": "p95-latency", "interval": f"{interval_s}s", "failureLimit": 0,
             "successCondition": f"result[0] <= {thresholds.max_p95_ms / 1000}",
             "provider": {"prometheus": {"address": "http://prometheus:9090", "query":
                 f"histogram_quantile(0.95, sum by (le) "
                 f"(rate(mlops_request_latency_seconds_bucket{{{sel}}}[1m])))"}}}]}}
    return [rollout, analysis, k8s.service(spec)]


def flagger_canary(name: str, model_uri: str, step_weight: int = 25, max_weight: int = 50,
                   interval_s: int = 60, max_failed_checks: int = 1,
                   thresholds: Thresholds = Thresholds(),
                   image: str = k8s.DEFAULT_IMAGE) -> list[dict[str, Any]]:
    """A Flagger ``Canary`` over a plain Deployment (Flagger creates the primary and the
    services itself); ``threshold`` is ``--max-failed-checks``."""
    spec = _spec(name, model_uri)
    dep = k8s.deployment(spec, image=image, tracking_uri=TRACKING_URI)
    canary = {
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "service": {"port": 80, "targetPort": 8000},
                 "analysis": {"interval": f"{interval_s}s", "threshold": max_failed_checks,
                              "stepWeight": step_weight, "maxWeight": max_weight,
                              "metrics": [
                                  {"name": "request-success-rate",
                                   "thresholdRange": {"min": round(100 * (1 - thresholds.max_error_ratio), 2)},
                                   "interval": "1m"},
                                  {"name": "request-duration",
                                   "thresholdRange": {"max": thresholds.max_p95_ms},
                                   "interval": "1m"}]}}}
    return [dep, canary]


_REQUIRED = {"Rollout": ("spec.selector", "spec.template", "spec.strategy.canary.steps"),
             "AnalysisTemplate": ("spec.metrics",),
             "Canary": ("spec.targetRef", "spec.analysis.interval", "spec.analysis.threshold")}


def _get(doc: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def validate(docs: list[dict[str, Any]]) -> list[str]:
    """One line per document: built-in kinds against the offline Kubernetes schemas (lesson
    04), a Rollout's pod template as a Deployment's, custom resources for their required
    fields. Raises CourseError naming the document and field at fault."""
    out = []
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if kind in _REQUIRED:
            missing = [f for f in _REQUIRED[kind] if _get(doc, f) in (None, [], {})]
            if missing:
                raise CourseError(f"{kind}/{name} lacks {', '.join(missing)}")
            line = f"{kind}/{name}: required fields present (custom resource, no offline schema)"
            if kind == "Rollout":
                probe = {"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": name},
                         "spec": {"selector": doc["spec"]["selector"],
                                  "template": doc["spec"]["template"]}}
                k8s.validate_kubernetes(probe)
                line += "; pod template valid as a Deployment's"
            out.append(line)
        else:
            out += k8s.validate_kubernetes(doc)
    return out
