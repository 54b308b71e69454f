"""Compose files and Kubernetes manifests from a spec: valid offline, and saying what we mean.

Kubernetes manifests are validated with kubernetes-validate in strict mode against API
schemas it bundles (no cluster). Compose files are parsed by the compose CLI (`docker
compose config` when v2 answers, else `docker-compose config`): those tests carry the
docker marker, since the CLI comes with Docker (no engine is needed to parse).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.helpers import need


TOPOLOGIES = ("single-large", "many-small")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A stand-in MLflow model directory (manifests read only its path and size)."""
    path = tmp_path_factory.mktemp("model") / "logreg"
    path.mkdir()
    (path / "MLmodel").write_text("flavors: {}\n")
    return str(path)


def make_spec(topology: str, model_uri: str):
    from course_helpers.deploy import DeploymentSpec

    if topology == "single-large":
        return DeploymentSpec.single_large(model_uri, cpus=2, memory_mb=2048, name="big")
    return DeploymentSpec.many_small(model_uri, replicas=2, memory_mb=2048, name="small")


def by_kind(docs):
    return {d["kind"]: d for d in docs}


@pytest.mark.unit
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_kubernetes_manifests_are_valid_in_strict_mode(topology, model_dir):
    import kubernetes_validate

    from course_helpers.deploy import manifests

    spec = make_spec(topology, model_dir)
    docs = manifests.kubernetes(spec)
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    lines = manifests.validate_kubernetes(docs)  # strict, manifests.K8S_VERSION
    assert lines == [f"{k}/{spec.name}: valid for {manifests.K8S_VERSION}"
                     for k in ("Deployment", "Service", "HorizontalPodAutoscaler")]
    newest = kubernetes_validate.utils.latest_version()
    manifests.validate_kubernetes(docs, version=newest)
    # the YAML text is the same objects
    assert list(yaml.safe_load_all(manifests.kubernetes_yaml(spec))) == docs


@pytest.mark.unit
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_deployment_says_what_the_spec_says(topology, model_dir):
    from course_helpers.deploy import manifests

    spec = make_spec(topology, model_dir)
    kinds = by_kind(manifests.kubernetes(spec))
    dep, svc, hpa = kinds["Deployment"], kinds["Service"], kinds["HorizontalPodAutoscaler"]
    pod = dep["spec"]["template"]
    (box,) = pod["spec"]["containers"]

    assert dep["spec"]["replicas"] == spec.replicas
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    cpu = "2" if topology == "single-large" else "1"
    assert box["resources"] == {"requests": {"cpu": cpu, "memory": "2048Mi" if cpu == "2" else "1024Mi"},
                                "limits": {"cpu": cpu, "memory": "2048Mi" if cpu == "2" else "1024Mi"}}
    assert box["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert box["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert box["startupProbe"]["httpGet"]["path"] == "/health"
    assert box["command"][box["command"].index("--workers") + 1] == str(spec.workers_per_replica)
    assert {"name": "MLOPS_MODEL_URI", "value": "/model"} in box["env"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": spec.name}
    assert hpa["spec"]["minReplicas"] == spec.replicas <= hpa["spec"]["maxReplicas"]
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target["name"] == "cpu" and target["target"]["averageUtilization"] == 70


@pytest.mark.unit
def test_strict_validation_catches_a_typo_and_names_the_field(model_dir):
    from course_helpers.deploy import manifests
    from course_helpers.errors import CourseError

    dep = manifests.deployment(make_spec("many-small", model_dir))
    box = dep["spec"]["template"]["spec"]["containers"][0]
    box["resource"] = box.pop("resources")  # the classic typo: silently ignored without --strict
    with pytest.raises(CourseError) as err:
        manifests.validate_kubernetes(dep)
    assert "Deployment/small" in str(err.value) and "resource" in str(err.value)
    manifests.validate_kubernetes(dep, strict=False)  # non-strict lets it through

    hpa = manifests.autoscaler(make_spec("many-small", model_dir))
    hpa["spec"]["maxReplicas"] = "four"
    with pytest.raises(CourseError, match="maxReplicas"):
        manifests.validate_kubernetes(hpa)


@pytest.mark.unit
def test_quantities_and_names():
    from course_helpers.deploy import manifests
    from course_helpers.deploy.spec import SpecError

    assert [manifests.cpu_quantity(c) for c in (1, 2.0, 0.5, 1.25, 0.1)] == [
        "1", "2", "500m", "1250m", "100m"]
    assert manifests.memory_quantity(512) == "512Mi"
    assert manifests.k8s_name("Lesson_04 Model") == "lesson-04-model"
    with pytest.raises(SpecError):
        manifests.k8s_name("___")
    with pytest.raises(SpecError):
        manifests.cpu_quantity(0)


@pytest.mark.unit
def test_registry_models_need_a_tracking_uri_and_no_mount():
    from course_helpers.deploy import DeploymentSpec, manifests
    from course_helpers.deploy.spec import SpecError

    spec = DeploymentSpec.many_small("models:/simple-system@champion", replicas=3, name="reg")
    with pytest.raises(SpecError, match="tracking_uri"):
        manifests.kubernetes(spec)
    docs = manifests.kubernetes(spec, tracking_uri="http://mlflow:5000", max_replicas=6)
    manifests.validate_kubernetes(docs)
    env = {e["name"]: e["value"] for e in
           docs[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLOPS_MODEL_URI"] == "models:/simple-system@champion"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert docs[2]["spec"]["maxReplicas"] == 6
    service = manifests.compose(spec, tracking_uri="http://mlflow:5000")["services"]["reg"]
    assert "volumes" not in service
    assert "image must contain the model" not in manifests.kubernetes_yaml(
        spec, tracking_uri="http://mlflow:5000")


@pytest.mark.unit
def test_autoscaler_refuses_nonsense(model_dir):
    from course_helpers.deploy import manifests
    from course_helpers.deploy.spec import SpecError

    spec = make_spec("many-small", model_dir)
    with pytest.raises(SpecError, match="below replicas"):
        manifests.autoscaler(spec, max_replicas=1)
    with pytest.raises(SpecError, match="percentage"):
        manifests.autoscaler(spec, cpu_target_percent=150)


@pytest.mark.unit
def test_container_env_matches_the_server_settings():
    """The containers are configured with exactly the variables the server reads."""
    from course_helpers.deploy import DeploymentSpec
    from course_helpers.deploy.docker import container_env
    from course_helpers.serving.app import Settings

    spec = DeploymentSpec.many_small("/models/x", replicas=2, cache="lru")
    env = container_env(spec)
    expected = Settings(model_uri="/model", cache="lru", db=None,
                        max_requests_per_connection=100).to_env()
    assert {k: v for k, v in env.items() if k in expected} == expected
    assert env["PROMETHEUS_MULTIPROC_DIR"] and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    two = container_env(DeploymentSpec.single_large("/models/x", cpus=2, cache="lru"))
    assert two["MLOPS_REUSEPORT_BIND"] == "0.0.0.0:8000"  # workers share connections evenly
    # no confounder: one worker or two, every replica gets the same server settings
    assert {k: v for k, v in two.items() if k.startswith("MLOPS_")} == \
        {k: v for k, v in env.items() if k.startswith("MLOPS_")}


@pytest.mark.unit
def test_every_topology_runs_the_same_server_command():
    from course_helpers.deploy.recipe import WORKER_CLASS, gunicorn_command

    one, two = gunicorn_command(1), gunicorn_command(2)
    assert WORKER_CLASS in one and WORKER_CLASS in two
    assert [a for a in one if a != "1"] == [a for a in two if a != "2"]


@pytest.mark.unit
def test_image_carries_what_the_server_imports():
    from course_helpers.deploy.docker import SERVER_MODULES, package_files

    files = package_files()
    for needed in ("course_helpers/__init__.py", "course_helpers/serving/app.py",
                   "course_helpers/serving/gunicorn_conf.py", "course_helpers/config.py",
                   "course_helpers/tracking/store.py", "course_helpers/errors.py"):
        assert needed in files
    assert "course_helpers/plots.py" not in files  # an unrelated edit does not rebuild
    assert "course_helpers/deploy/docker.py" not in files
    assert SERVER_MODULES[0] == "course_helpers.serving.app"


@pytest.mark.unit
@pytest.mark.parametrize("replicas_as", ["deploy", "services"])
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_compose_file_structure(topology, replicas_as, model_dir, tmp_path):
    from course_helpers.deploy import manifests

    spec = make_spec(topology, model_dir)
    paths = manifests.write_manifests(spec, tmp_path, replicas_as=replicas_as, lb_port=9090)
    assert sorted(paths) == ["compose.yaml", "kubernetes.yaml", "nginx.conf"]
    doc = yaml.safe_load(paths["compose.yaml"].read_text())
    assert "&id" not in paths["compose.yaml"].read_text()  # no YAML anchors
    services = doc["services"]
    servers = [n for n in services if n != "lb"]
    if replicas_as == "deploy":
        assert servers == [spec.name]
        assert services[spec.name]["deploy"]["replicas"] == spec.replicas
    else:
        assert servers == [f"{spec.name}-r{i}" for i in range(spec.replicas)]
        assert [services[s]["environment"]["MLOPS_REPLICA"] for s in servers] == servers
    for name in servers:
        s = services[name]
        assert s["deploy"]["resources"]["limits"] == {
            "cpus": f"{spec.cpus_per_replica:g}", "memory": f"{spec.memory_mb_per_replica}M"}
        assert s["healthcheck"]["test"][:2] == ["CMD", "python"] and "/ready" in s["healthcheck"]["test"][3]
        assert s["restart"] == "on-failure"
        assert s["volumes"] == [f"{model_dir}:/model:ro"]
        assert "ports" not in s  # only the load balancer is published
    lb = services["lb"]
    assert lb["ports"] == ["127.0.0.1:9090:80"]
    assert set(lb["depends_on"]) == set(servers)
    conf = paths["nginx.conf"].read_text()
    assert all(f"server {s}:8000" in conf for s in servers)
    assert "daemon" not in conf  # the service's command sets it


@pytest.mark.unit
def test_nginx_conf_of_the_compose_file_parses(model_dir, tmp_path):
    """nginx -t on the generated config (upstream names resolved through a hosts entry)."""
    from course_helpers import config
    from course_helpers.deploy import manifests

    nginx = config.find_binary("nginx")
    need(bool(nginx), "nginx (sudo apt-get install nginx)")
    spec = make_spec("many-small", model_dir)
    text = manifests.compose_nginx_conf(spec, ["localhost"], port=18999)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text.replace("http {", f"pid {tmp_path}/nginx.pid;\nhttp {{", 1))
    out = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf), "-e",
                          str(tmp_path / "error.log")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _compose_cli() -> bool:
    return bool(shutil.which("docker-compose")) or (
        bool(shutil.which("docker")) and subprocess.run(
            ["docker", "compose", "version"], capture_output=True).returncode == 0)


@pytest.mark.docker
@pytest.mark.parametrize("replicas_as", ["deploy", "services"])
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_compose_cli_accepts_the_file(topology, replicas_as, model_dir, tmp_path):
    from course_helpers.deploy import manifests

    need(_compose_cli(), "the compose CLI (`docker compose` or `docker-compose`)")
    spec = make_spec(topology, model_dir)
    paths = manifests.write_manifests(spec, tmp_path, replicas_as=replicas_as)
    command, normalised = manifests.compose_config(paths["compose.yaml"])
    print(f"\n{command}: ok")
    assert command.split()[0] in ("docker", "docker-compose")
    parsed = yaml.safe_load(normalised)
    assert "lb" in parsed["services"]
    assert str(spec.memory_mb_per_replica) in normalised


@pytest.mark.docker
def test_compose_cli_rejects_a_broken_file(tmp_path):
    from course_helpers.deploy import manifests
    from course_helpers.errors import CourseError

    need(_compose_cli(), "the compose CLI (`docker compose` or `docker-compose`)")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  web:\n    image: x\n    restart: sometimes\n    cpus: lots\n")
    with pytest.raises(CourseError, match="rejected compose.yaml"):
        manifests.compose_config(bad)
