#!/usr/bin/env python3
"""Render the premem Helm chart (k8s/premem) offline and validate it.

    pip install -r tests/helm/requirements.txt
    python3 tests/helm/validate_chart.py            # from the repository root

No cluster, no helm binary and no network: `helm-python-sdk` lints
(`helm lint --strict`) and renders the chart with the Helm v4 SDK (as `helm
template` would; render() merges the given values over values.yaml itself,
like `helm -f`, which is checked against an independent merge) and
`kubernetes-validate`
checks every object against the Kubernetes 1.30 OpenAPI schemas it bundles,
strictly (unknown fields are errors). Objects of API groups outside
Kubernetes itself (the ServiceMonitor of prometheus-operator) have no bundled
schema: their schema check is skipped, and said so.

For every value set (the defaults, k8s/values-gpu-sweep.yaml, and overrides
of both) it also checks that the values flow through to the objects:
replicas, GPUs, the spec's world size, the image, the token Secret, the
security contexts, the submit Job's command. Where a premem binary is at hand
(PREMEM_BIN, ./target/*/premem or `premem` on PATH) the rendered spec is
parsed by premem itself (`premem sweep --dry-run`). Inconsistent values (a job
whose world size differs from the trainer count...) must fail to render, with
the chart's message.

Exits non-zero with a message naming the value set and object on any failure.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "premem"
GPU_VALUES = ROOT / "k8s" / "values-gpu-sweep.yaml"
KUBE_VERSION = "1.30"
RELEASE = "premem-check"
NAMESPACE = "premem-ns"
# The chart's appVersion (the default image tag), read from Chart.yaml in main().
CHART_APP_VERSION = ""
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

try:
    import helm_python
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"validate_chart: {e.name} is missing: "
        f"pip install -r {Path(__file__).resolve().parent / 'requirements.txt'}"
    )


class Failure(Exception):
    """A check that failed; the message says what and where."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


# Values ------------------------------------------------------------------


def deep_merge(base: Any, override: Any) -> Any:
    """Values merged the way `helm -f` does: maps merge key by key, anything
    else (lists, scalars) replaces; a null override removes the key."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    with open(path) as f:
        data = yaml.safe_load(f)
    check(isinstance(data, dict), f"{path}: not a YAML mapping")
    return data


# Rendering ---------------------------------------------------------------


class Rendered:
    """One value set rendered: its merged values and its objects."""

    def __init__(self, name: str, values: dict[str, Any], objects: list[dict[str, Any]], notes: str):
        self.name = name
        self.values = values
        self.objects = objects
        self.notes = notes

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        found = [
            o
            for o in self.of_kind(kind)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        check(len(found) == 1, f"expected one {kind} of component {component}, found {len(found)}")
        return found[0]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        return None


def render(chart: Any, user_values: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """The chart's manifests for `user_values` and the values they were made
    from. render() itself coalesces user values over the chart's values.yaml
    (like `helm install -f`); the merge done here independently must agree."""
    merged = deep_merge(chart.values, user_values)
    sdk_merged = chart.merge_values(user_values)
    check(
        without_nulls(sdk_merged) == without_nulls(merged),
        "helm-python-sdk's merge of the values differs from helm -f semantics",
    )
    manifests = chart.render(user_values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return manifests, merged


def parse(manifests: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError as e:
            raise Failure(f"{path}: not valid YAML: {e}") from e
        for doc in documents:
            if doc is None:
                continue
            check(isinstance(doc, dict), f"{path}: a document that is not a mapping")
            for key in ("apiVersion", "kind", "metadata"):
                check(key in doc, f"{path}: an object without {key}")
            check("name" in doc["metadata"], f"{path}: a {doc['kind']} without metadata.name")
            doc["__template"] = path
            objects.append(doc)
    return objects, notes


# Schema validation -------------------------------------------------------


def is_core_api(api_version: str) -> bool:
    """Kubernetes' own API groups: the core group, unqualified groups (apps,
    batch) and *.k8s.io; anything else is a CRD's."""
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def validate_schemas(objects: list[dict[str, Any]]) -> tuple[int, list[str]]:
    validated, skipped = 0, []
    for obj in objects:
        clean = {k: v for k, v in obj.items() if k != "__template"}
        what = f"{obj['kind']}/{obj['metadata']['name']} ({obj['__template']})"
        if not is_core_api(obj["apiVersion"]):
            skipped.append(f"{obj['kind']} ({obj['apiVersion']})")
            continue
        try:
            kubernetes_validate.validate(clean, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            raise Failure(f"{what}: invalid for Kubernetes {KUBE_VERSION} at {path or '<root>'}: {e.message}") from e
        except kubernetes_validate.SchemaNotFoundError as e:
            raise Failure(
                f"{what}: no Kubernetes {KUBE_VERSION} schema for {obj['apiVersion']} {obj['kind']}: {e}"
            ) from e
        validated += 1
    return validated, skipped


# Checks of the rendered objects -------------------------------------------


def pod_templates(r: Rendered) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(what, owner, pod template) for every workload."""
    out = []
    for obj in r.objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
            out.append((f"{obj['kind']}/{obj['metadata']['name']}", obj, obj["spec"]["template"]))
    return out


def containers_of(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def is_premem(container: dict[str, Any], binary: str) -> bool:
    command = container.get("command", [])
    return bool(command) and (command[0] == binary or (command[0] == "/bin/sh" and any(binary in c for c in command)))


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def gpu_limit(container: dict[str, Any]) -> Any:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def gpu_request(container: dict[str, Any]) -> Any:
    return container.get("resources", {}).get("requests", {}).get("nvidia.com/gpu")


def check_labels(r: Rendered) -> None:
    """The Kubernetes recommended labels on every object and pod; selectors
    select their pods; no duplicates; everything in the release namespace."""
    for obj in r.objects:
        labels = obj["metadata"].get("labels", {})
        what = f"{obj['kind']}/{obj['metadata']['name']}"
        for key in RECOMMENDED_LABELS:
            check(key in labels, f"{what}: label {key} missing")
        check(labels["app.kubernetes.io/instance"] == RELEASE, f"{what}: wrong instance label")
        check(labels["app.kubernetes.io/managed-by"] == "Helm", f"{what}: wrong managed-by label")
    for what, owner, template in pod_templates(r):
        labels = template["metadata"].get("labels", {})
        for key in RECOMMENDED_LABELS:
            check(key in labels, f"{what}: pod label {key} missing")
        selector = owner["spec"].get("selector", {}).get("matchLabels")
        if selector is not None:
            for k, v in selector.items():
                check(labels.get(k) == v, f"{what}: the selector's {k}={v} does not select its pods")
    seen = set()
    for obj in r.objects:
        key = (obj["kind"], obj["metadata"]["name"])
        check(key not in seen, f"{key[0]}/{key[1]} is rendered twice")
        seen.add(key)
        check(obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE, f"{key}: outside the release namespace")


def check_security(r: Rendered) -> None:
    """Every pod non-root with a read-only root filesystem."""
    for what, _, template in pod_templates(r):
        pod = template["spec"].get("securityContext", {})
        check(pod.get("runAsNonRoot") is True, f"{what}: pod securityContext.runAsNonRoot is not true")
        check(
            pod.get("runAsUser") == 10001, f"{what}: pod securityContext.runAsUser is {pod.get('runAsUser')}, not 10001"
        )
        check("fsGroup" in pod, f"{what}: pod securityContext.fsGroup missing")
        check(
            pod.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            f"{what}: pod seccompProfile is not RuntimeDefault",
        )
        check(template["spec"].get("hostNetwork") is not True, f"{what}: hostNetwork")
        for c in containers_of(template):
            sc = c.get("securityContext", {})
            cw = f"{what} container {c['name']}"
            check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem is not true")
            check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation is not false")
            check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: capabilities do not drop ALL")
            check(sc.get("runAsUser", 10001) != 0 and sc.get("runAsNonRoot", True) is True, f"{cw}: runs as root")
            check(sc.get("privileged") is not True, f"{cw}: privileged")
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            check("/tmp" in mounts, f"{cw}: no writable /tmp (the root filesystem is read-only)")
            volumes = {v["name"] for v in template["spec"].get("volumes", [])}
            for m in c.get("volumeMounts", []):
                check(m["name"] in volumes, f"{cw}: mounts volume {m['name']}, which the pod does not have")


def check_references(r: Rendered) -> None:
    """ConfigMaps, Secrets and claims the pods use are rendered (or given)."""
    external = {r.values["token"].get("existingSecret"), r.values["objectStore"].get("existingSecret")}
    if r.values["coordinator"]["tls"]["enabled"]:
        external.add(r.values["coordinator"]["tls"]["secretName"])
    external.discard("")
    external.discard(None)
    for what, _, template in pod_templates(r):
        for v in template["spec"].get("volumes", []):
            if "configMap" in v:
                check(
                    r.named("ConfigMap", v["configMap"]["name"]) is not None,
                    f"{what}: ConfigMap {v['configMap']['name']} not rendered",
                )
            if "secret" in v:
                name = v["secret"]["secretName"]
                check(name in external or r.named("Secret", name) is not None, f"{what}: Secret {name} not rendered")
                secret = r.named("Secret", name)
                if secret is not None and name not in external:
                    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
                    for item in v["secret"].get("items", []):
                        check(item["key"] in keys, f"{what}: volume {v['name']}: Secret {name} has no key {item['key']}")
            if "persistentVolumeClaim" in v:
                name = v["persistentVolumeClaim"]["claimName"]
                given = r.values["inputs"].get("volume", {}).get("persistentVolumeClaim", {}).get("claimName")
                check(
                    name == given or r.named("PersistentVolumeClaim", name) is not None,
                    f"{what}: claim {name} not rendered",
                )
        for c in containers_of(template):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = r.named("Secret", ref["name"])
                    if ref["name"] in external:
                        continue
                    check(
                        secret is not None,
                        f"{what} {c['name']}: env {e['name']} from Secret {ref['name']}, not rendered",
                    )
                    keys = set(secret.get("data", {})) | set(secret.get("stringData", {}))
                    check(
                        ref["key"] in keys,
                        f"{what} {c['name']}: env {e['name']}: Secret {ref['name']} has no key {ref['key']}",
                    )
            for ef in c.get("envFrom", []):
                name = ef.get("secretRef", {}).get("name")
                if name:
                    check(
                        name in external or r.named("Secret", name) is not None,
                        f"{what} {c['name']}: envFrom Secret {name} not rendered",
                    )


def spec_of(r: Rendered) -> tuple[str, dict[str, Any], str]:
    """(file name, parsed TOML, text) of the spec ConfigMap."""
    cm = r.component("ConfigMap", "spec")
    kind = r.values["spec"]["kind"]
    file = "sweep.toml" if kind == "sweep" else "job.toml"
    check(file in cm.get("data", {}), f"ConfigMap {cm['metadata']['name']}: no {file}")
    text = cm["data"][file]
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise Failure(f"ConfigMap {cm['metadata']['name']}: {file} is not valid TOML: {e}") from e
    return file, spec, text


def world_size(kind: str, spec: dict[str, Any]) -> int:
    cluster = spec.get("job", {}).get("cluster", {}) if kind == "sweep" else spec.get("cluster", {})
    return int(cluster.get("trainers", 1))


def check_flow(r: Rendered) -> dict[str, Any]:
    """Values show up where they should; returns facts for the summary."""
    v = r.values
    binary = v["image"]["binary"]
    image = f"{v['image']['repository']}:{v['image'].get('tag') or CHART_APP_VERSION}"
    token_secret = v["token"].get("existingSecret") or f"{fullname(v)}-token"
    token_key = v["token"]["existingSecretKey"] if v["token"].get("existingSecret") else "token"
    coordinator = f"{fullname(v)}-coordinator"
    scheme = "https" if v["coordinator"]["tls"]["enabled"] else "http"
    address = f"{scheme}://{coordinator}:{v['coordinator']['port']}"

    # Evaluators.
    evaluator = r.component("Deployment", "evaluator")
    check(
        evaluator["spec"]["replicas"] == v["evaluator"]["replicas"],
        f"evaluator replicas {evaluator['spec']['replicas']} != evaluator.replicas {v['evaluator']['replicas']}",
    )
    ec = next(c for c in evaluator["spec"]["template"]["spec"]["containers"] if c["name"] == "evaluator")
    want = v["evaluator"]["gpus"] or None
    check(
        gpu_limit(ec) == want and gpu_request(ec) == want,
        f"evaluator nvidia.com/gpu limit/request {gpu_limit(ec)}/{gpu_request(ec)} != evaluator.gpus {v['evaluator']['gpus']}",
    )
    args = ec["args"]
    check(
        args[0] == "evaluator" and args[args.index("--cache-dir") + 1] == "/cache",
        "evaluator: not `premem evaluator --cache-dir /cache`",
    )
    check(
        str(v["evaluator"]["cache"]["gb"]) == args[args.index("--cache-gb") + 1],
        "evaluator: --cache-gb is not evaluator.cache.gb",
    )
    check(any(m["mountPath"] == "/cache" for m in ec["volumeMounts"]), "evaluator: no /cache volume")

    # Trainers.
    trainer = r.component("StatefulSet", "trainer")
    replicas = v["trainer"]["replicas"]
    check(
        trainer["spec"]["replicas"] == replicas,
        f"trainer replicas {trainer['spec']['replicas']} != trainer.replicas {replicas}",
    )
    headless = r.named("Service", trainer["spec"]["serviceName"])
    check(
        headless is not None and headless["spec"].get("clusterIP") == "None",
        f"trainer StatefulSet: serviceName {trainer['spec']['serviceName']} is not a headless Service",
    )
    tpod = trainer["spec"]["template"]["spec"]
    tc = next(c for c in tpod["containers"] if c["name"] == "trainer")
    want = v["trainer"]["gpus"] or None
    check(
        gpu_limit(tc) == want and gpu_request(tc) == want,
        f"trainer nvidia.com/gpu limit/request {gpu_limit(tc)}/{gpu_request(tc)} != trainer.gpus {v['trainer']['gpus']}",
    )
    shm = [vol for vol in tpod["volumes"] if vol.get("emptyDir", {}).get("medium") == "Memory"]
    check(
        len(shm) == 1 and any(m["name"] == shm[0]["name"] and m["mountPath"] == "/dev/shm" for m in tc["volumeMounts"]),
        "trainer: no emptyDir medium Memory at /dev/shm",
    )
    for key in ("nodeSelector", "tolerations", "affinity"):
        check((tpod.get(key) or None) == (v["trainer"].get(key) or None), f"trainer: {key} is not trainer.{key}")
    targs = tc["command"] + tc.get("args", [])
    targv = " ".join(targs)

    # The spec and its world size.
    kind = v["spec"]["kind"]
    file, spec, text = spec_of(r)
    world = world_size(kind, spec)
    mode = v["trainer"]["mode"]
    if mode == "job":
        check(world == replicas, f"job mode: the spec's cluster.trainers {world} != trainer.replicas {replicas}")
        job = v["trainer"].get("jobName") or spec["run"]["name"]
        check(f"--job {job}" in targv, f"job mode: trainer args lack `--job {job}`: {targv}")
        if v["trainer"]["rankFromHostname"]:
            check("${HOSTNAME##*-}" in targv, f"job mode: rank not from the host name: {targv}")
        else:
            check("--rank $(PREMEM_RANK)" in targv, f"job mode: trainer args lack `--rank $(PREMEM_RANK)`: {targv}")
            rank = env_of(tc).get("PREMEM_RANK", {})
            check(
                rank.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                == "metadata.labels['apps.kubernetes.io/pod-index']",
                "job mode: PREMEM_RANK is not the pod-index label",
            )
    else:
        per_pod = int(v["trainer"].get("ranksPerPod", 1))
        check(world <= replicas * per_pod, f"pool mode: runs of {world} ranks never fit a pool of {replicas} x {per_pod}")
        if per_pod > 1:
            check(f"--local-ranks {per_pod}" in targv, f"pool mode: {per_pod} ranks a pod but no --local-ranks: {targv}")
        check(
            "--name $(POD_NAME)" in targv and "--job" not in targv,
            f"pool mode: trainer args are not `--name $(POD_NAME)`: {targv}",
        )
    check("--bind-host $(POD_IP)" in targv, f"trainer: the ring listener does not bind the pod IP: {targv}")
    if kind == "sweep":
        pool = replicas * int(v["trainer"].get("ranksPerPod", 1))
        check(
            spec["sweep"]["trainers"] == pool,
            f"sweep.trainers {spec['sweep']['trainers']} != trainer.replicas x ranksPerPod {pool}",
        )
        check(
            spec["sweep"]["evaluators"] == v["evaluator"]["replicas"],
            f"sweep.evaluators {spec['sweep']['evaluators']} != evaluator.replicas {v['evaluator']['replicas']}",
        )
    output = spec.get("sweep" if kind == "sweep" else "run", {}).get("output", "")
    check(
        "://" in output and not output.startswith(("file://", "memory://")),
        f"the spec's output {output!r} is not in an object store: pods in different places write and read it",
    )
    if v["spec"].get("tpl", True) and "{{ .Values.trainer.replicas }}" in v["spec"]["content"]:
        check(world == replicas, f"the spec's world size {world} != trainer.replicas {replicas}")

    # Coordinator and its Service.
    coord = r.component("Deployment", "coordinator")
    check(
        coord["spec"]["replicas"] == 1 and coord["spec"]["strategy"]["type"] == "Recreate",
        "coordinator: not one replica with the Recreate strategy",
    )
    cc = next(c for c in coord["spec"]["template"]["spec"]["containers"] if c["name"] == "coordinator")
    cargs = cc["args"]
    check(cargs[0] == "coordinator" and "--listen" in cargs and "--state" in cargs, f"coordinator args: {cargs}")
    check(
        cargs[cargs.index("--listen") + 1].endswith(f":{v['coordinator']['port']}"),
        "coordinator: --listen is not on coordinator.port",
    )
    svc = r.named("Service", coordinator)
    check(svc is not None, f"no coordinator Service {coordinator}")
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    check(ports.get("grpc") == v["coordinator"]["port"], f"coordinator Service: grpc port {ports.get('grpc')}")
    if v["coordinator"]["metrics"]["enabled"]:
        check(
            "--metrics-listen" in cargs and ports.get("metrics") == v["coordinator"]["metrics"]["port"],
            "coordinator: metrics enabled but no --metrics-listen / metrics port",
        )
    state = cargs[cargs.index("--state") + 1]
    if v["coordinator"].get("state"):
        check(state == v["coordinator"]["state"], f"coordinator --state {state} != coordinator.state")

    # Submit Job.
    if v["submit"]["enabled"]:
        submit = r.component("Job", "submit")
        sc = next(c for c in submit["spec"]["template"]["spec"]["containers"] if c["name"] == "submit")
        sargs = sc["args"]
        path = f"/etc/premem/spec/{file}"
        if kind == "sweep":
            check(
                sargs[:4] == ["sweep", path, "--remote", "--no-report"],
                f"submit: not `premem sweep {path} --remote --no-report`: {sargs}",
            )
        else:
            check(sargs[:3] == ["submit", "--config", path], f"submit: not `premem submit --config {path}`: {sargs}")
        check(
            env_of(sc).get("PREMEM_COORDINATOR", {}).get("value") == address,
            f"submit: PREMEM_COORDINATOR is not {address}",
        )

    # Every premem container: the image, the token, the coordinator.
    seen_components = set()
    premem_containers = 0
    for what, owner, template in pod_templates(r):
        component = owner["metadata"]["labels"].get("app.kubernetes.io/component")
        for c in containers_of(template):
            if not is_premem(c, binary):
                continue
            premem_containers += 1
            cw = f"{what} container {c['name']}"
            check(c["image"] == image, f"{cw}: image {c['image']} != {image}")
            check(
                c.get("imagePullPolicy") == v["image"]["pullPolicy"], f"{cw}: imagePullPolicy is not image.pullPolicy"
            )
            if c in template["spec"].get("initContainers", []):
                continue  # init containers (premem data synth) need no RPC
            seen_components.add(component)
            env = env_of(c)
            ref = env.get("PREMEM_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            # Least privilege: each component holds its own role's token.
            key = component if v["token"]["roles"] and component != "coordinator" else token_key
            check(
                ref.get("name") == token_secret and ref.get("key") == key,
                f"{cw}: PREMEM_TOKEN is not from Secret {token_secret} key {key}",
            )
            check(
                env.get("PREMEM_COORDINATOR", {}).get("value") == address, f"{cw}: PREMEM_COORDINATOR is not {address}"
            )
            check(template["spec"].get("serviceAccountName") == service_account(v), f"{what}: serviceAccountName")
            pulls = template["spec"].get("imagePullSecrets") or []
            check(pulls == (v.get("imagePullSecrets") or []), f"{what}: imagePullSecrets is not the values'")
            has_store = any("secretRef" in ef for ef in c.get("envFrom", [])) or "AWS_ENDPOINT" in env
            check(has_store, f"{cw}: no object-store credentials")
    check_role_tokens(r, token_secret)
    expected = {"coordinator", "trainer", "evaluator"} | ({"submit"} if v["submit"]["enabled"] else set())
    check(
        seen_components == expected,
        f"premem containers found in {sorted(seen_components)}, expected {sorted(expected)}",
    )

    # NOTES.txt explains how to follow a run and fetch the report.
    for needle in ("kubectl", "port-forward", "premem status --job", "premem report", "--out", "logs"):
        check(needle in r.notes, f"NOTES.txt does not mention `{needle}`")

    return {
        "world": world,
        "kind": kind,
        "mode": mode,
        "premem_containers": premem_containers,
        "spec_text": text,
        "spec_file": file,
    }


ROLES = ("submit", "read", "trainer", "evaluator")


def check_role_tokens(r: Rendered, token_secret: str) -> None:
    """With token.roles the coordinator reads each role's token from the
    token Secret, mounted read-only; without, it knows the cluster token only."""
    pod = r.component("Deployment", "coordinator")["spec"]["template"]["spec"]
    coord = pod["containers"][0]
    args = coord["args"]
    volume = next((v for v in pod.get("volumes", []) if v["name"] == "role-tokens"), None)
    if not r.values["token"]["roles"]:
        check(volume is None and "--trainer-token-file" not in args, "role tokens without token.roles")
        return
    for role in ROLES:
        flag = f"--{role}-token-file"
        check(flag in args, f"coordinator: no {flag}")
        if flag in args:
            check(args[args.index(flag) + 1] == f"/etc/premem/tokens/{role}", f"coordinator: {flag} path")
    check(volume is not None, "coordinator: no role-tokens volume")
    if volume:
        secret = volume["secret"]
        check(secret["secretName"] == token_secret, f"role-tokens volume is not Secret {token_secret}")
        check(sorted(i["key"] for i in secret["items"]) == sorted(ROLES), "role-tokens volume items")
    mounts = {m["name"]: m for m in coord.get("volumeMounts", [])}
    mount = mounts.get("role-tokens", {})
    check(mount.get("mountPath") == "/etc/premem/tokens" and mount.get("readOnly"), "role-tokens mount")


def fullname(values: dict[str, Any]) -> str:
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:63].rstrip("-")
    name = values.get("nameOverride") or "premem"
    return RELEASE if name in RELEASE else f"{RELEASE}-{name}"[:63].rstrip("-")


def service_account(values: dict[str, Any]) -> str:
    sa = values["serviceAccount"]
    if sa["create"]:
        return sa.get("name") or fullname(values)
    return sa.get("name") or "default"


# The spec, parsed by premem itself ----------------------------------------


def premem_binary() -> str | None:
    candidates = [
        os.environ.get("PREMEM_BIN"),
        str(ROOT / "target" / "debug" / "premem"),
        str(ROOT / "target" / "release" / "premem"),
        shutil.which("premem"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK) and Path(c).is_file():
            try:
                runs = subprocess.run([c, "--version"], capture_output=True, timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                runs = False
            if runs:
                return c
            print(f"note: {c} does not run (`--version` failed); not using it")
    return None


def check_spec_with_premem(binary: str, r: Rendered, facts: dict[str, Any]) -> None:
    """`premem sweep --dry-run` parses and validates the spec like a submit
    would, and checks each run fits its GPUs; a job spec is wrapped as the base job of a one-run sweep whose
    trainer pool is the StatefulSet, so it also checks the run fits the pool."""
    with tempfile.TemporaryDirectory(prefix="premem-chart-") as tmp:
        # The dry run also checks that every run fits the GPUs the spec
        # declares (train.gpu_memory): it sizes the model from its
        # config.json, which examples/configs holds for the paper's models.
        for config in (ROOT / "examples" / "configs").glob("*.json"):
            model = Path(tmp) / "models" / config.stem
            model.mkdir(parents=True)
            shutil.copy(config, model / "config.json")
        spec_path = Path(tmp) / facts["spec_file"]
        spec_path.write_text(facts["spec_text"])
        target = spec_path
        if facts["kind"] == "job":
            seed = tomllib.loads(facts["spec_text"]).get("run", {}).get("seed", 0)
            target = Path(tmp) / "wrapper-sweep.toml"
            target.write_text(
                "[sweep]\n"
                'name = "chart-check"\n'
                'output = "memory:///chart-check"\n'
                f"trainers = {r.values['trainer']['replicas']}\n"
                f"evaluators = {r.values['evaluator']['replicas']}\n"
                f'job = "{spec_path}"\n\n'
                "[[list]]\n"
                f'"run.seed" = {seed}\n'
            )
        proc = subprocess.run(
            [binary, "sweep", str(target), "--dry-run"], cwd=tmp, capture_output=True, text=True, timeout=120
        )
        check(
            proc.returncode == 0,
            f"premem rejects the rendered {facts['spec_file']}:\n{proc.stderr.strip() or proc.stdout.strip()}",
        )


# The value sets ----------------------------------------------------------


OVERRIDES = {
    "evaluator": {"replicas": 7},
    "trainer": {"gpus": 4, "replicas": 4, "ranksPerPod": 1},
    "image": {"tag": "x"},
}


def value_sets(gpu: dict[str, Any]) -> list[tuple[str, dict[str, Any], Callable[[Rendered], None] | None]]:
    def overridden(r: Rendered) -> None:
        ev = r.component("Deployment", "evaluator")
        check(ev["spec"]["replicas"] == 7, "override evaluator.replicas=7 not applied")
        tr = r.component("StatefulSet", "trainer")
        tc = tr["spec"]["template"]["spec"]["containers"][0]
        check(tr["spec"]["replicas"] == 4, "override trainer.replicas=4 not applied")
        check(gpu_limit(tc) == 4, f"override trainer.gpus=4 not applied: {gpu_limit(tc)}")
        check(tc["image"].endswith(":x"), f"override image.tag=x not applied: {tc['image']}")
        _, spec, _ = spec_of(r)
        check(world_size(r.values["spec"]["kind"], spec) == 4, "override trainer.replicas=4 did not reach the spec")

    def optional(r: Rendered) -> None:
        check(r.named("ServiceMonitor", f"{fullname(r.values)}-coordinator") is not None, "no ServiceMonitor")
        check(r.named("Deployment", f"{fullname(r.values)}-minio") is not None, "no MinIO Deployment")
        check(
            any(j["metadata"]["name"].startswith(f"{fullname(r.values)}-minio-bucket") for j in r.of_kind("Job")),
            "no MinIO bucket Job",
        )
        check(r.named("PersistentVolumeClaim", f"{fullname(r.values)}-coordinator-state") is not None, "no state claim")
        check(
            r.named("Secret", f"{fullname(r.values)}-object-store") is None, "object-store Secret rendered beside MinIO"
        )
        coord = r.component("Deployment", "coordinator")["spec"]["template"]["spec"]["containers"][0]
        check("--tls-cert" in coord["args"], "TLS enabled but no --tls-cert")
        monitor = r.named("ServiceMonitor", f"{fullname(r.values)}-coordinator") or {"spec": {"endpoints": [{}]}}
        credentials = monitor["spec"]["endpoints"][0].get("authorization", {}).get("credentials", {})
        check(credentials.get("key") == "read", f"the ServiceMonitor scrapes without the read token: {credentials}")

    def cluster_token_only(r: Rendered) -> None:
        secret = r.named("Secret", f"{fullname(r.values)}-token") or {}
        check(sorted(secret.get("data", {})) == ["token"], f"token.roles=false, yet the Secret holds {secret}")

    def gpu_sweep(r: Rendered) -> None:
        tr = r.component("StatefulSet", "trainer")
        tc = tr["spec"]["template"]["spec"]["containers"][0]
        check(
            tr["spec"]["replicas"] == 1 and gpu_limit(tc) == 8,
            "the GPU sweep does not run on one pod holding an 8-GPU node",
        )
        targv = " ".join(tc["command"] + tc.get("args", []))
        check("--local-ranks 8" in targv, f"the GPU sweep's pod does not start 8 local ranks: {targv}")
        _, spec, _ = spec_of(r)
        check(
            world_size("sweep", spec) == 8 and spec["job"]["cluster"].get("backend") == "nccl",
            "the GPU sweep's runs are not 8 NCCL ranks",
        )
        train = spec["job"]["train"]
        check(
            train.get("sharding") in ("auto", "zero2") and train.get("activation_checkpointing") == "layers",
            f"the GPU sweep is not sized by the memory plan (sharding, checkpointing): {train}",
        )
        ec = r.component("Deployment", "evaluator")["spec"]["template"]["spec"]["containers"][0]
        check(gpu_limit(ec) == 1, "the GPU sweep's evaluators have no GPU")
        check(spec["sweep"]["output"].startswith("s3://"), "the GPU sweep does not write to S3")

    def job_mode(r: Rendered) -> None:
        tc = r.component("StatefulSet", "trainer")["spec"]["template"]["spec"]["containers"][0]
        check("--job" in tc["args"] or "--job" in tc.get("command", []), "job mode without --job")

    def existing_secrets(r: Rendered) -> None:
        check(
            r.named("Secret", f"{fullname(r.values)}-token") is None,
            "token Secret rendered despite token.existingSecret",
        )
        check(
            r.named("Secret", f"{fullname(r.values)}-object-store") is None,
            "object-store Secret rendered despite objectStore.existingSecret",
        )

    return [
        ("defaults", {}, None),
        ("values-gpu-sweep.yaml", gpu, gpu_sweep),
        ("defaults + overrides", OVERRIDES, overridden),
        ("values-gpu-sweep.yaml + overrides", deep_merge(gpu, OVERRIDES), overridden),
        ("job mode (pod-index rank)", {"trainer": {"mode": "job", "replicas": 4}}, job_mode),
        ("one cluster token (token.roles=false)", {"token": {"roles": False}}, cluster_token_only),
        (
            "job mode (rank from host name)",
            {"trainer": {"mode": "job", "replicas": 2, "rankFromHostname": True}},
            job_mode,
        ),
        (
            "minio + serviceMonitor + TLS + state dir",
            {
                "minio": {"enabled": True},
                "serviceMonitor": {"enabled": True},
                "coordinator": {
                    "state": "/state",
                    "persistence": {"enabled": True},
                    "tls": {"enabled": True, "secretName": "premem-tls"},
                },
                "imagePullSecrets": [{"name": "regcred"}],
                "submit": {"ttlSecondsAfterFinished": 600},
            },
            optional,
        ),
        (
            "existing secrets",
            {
                "token": {"existingSecret": "my-token", "existingSecretKey": "t"},
                "objectStore": {"existingSecret": "my-s3", "endpoint": "http://ceph:8080", "allowHttp": True},
                "serviceAccount": {"create": False, "name": "ml"},
            },
            existing_secrets,
        ),
    ]


def refused(chart_values: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """Values the chart must refuse, and the words its message must contain."""
    default = chart_values["spec"]["content"]
    two_ranks = default.replace("trainers = {{ .Values.trainer.replicas }}", "trainers = 2")
    check(two_ranks != default, "the default spec no longer sets trainers = {{ .Values.trainer.replicas }}")
    return [
        ("a sweep in job mode", {"spec": {"kind": "sweep"}, "trainer": {"mode": "job"}}, 'needs trainer.mode "pool"'),
        (
            "job world size != replicas",
            {"trainer": {"mode": "job", "replicas": 4}, "spec": {"content": two_ranks}},
            "must equal trainer.replicas",
        ),
        (
            "runs larger than the pool",
            {"spec": {"content": two_ranks}, "trainer": {"replicas": 1}},
            "would never start",
        ),
        ("an unknown spec.kind", {"spec": {"kind": "curation"}}, "spec.kind must be"),
        (
            "several ranks a pod in job mode",
            {"trainer": {"mode": "job", "replicas": 2, "ranksPerPod": 2}},
            'ranksPerPod > 1 needs trainer.mode "pool"',
        ),
        ("ranks a pod != GPUs a pod", {"trainer": {"ranksPerPod": 8, "gpus": 4}}, "trainer.gpus must be 8"),
        ("an unknown trainer.mode", {"trainer": {"mode": "gang"}}, "trainer.mode must be"),
        ("TLS without a Secret", {"coordinator": {"tls": {"enabled": True}}}, "tls.secretName"),
        ("an untemplated world size", {"spec": {"tpl": False}}, "not a number"),
    ]


def main() -> int:
    global CHART_APP_VERSION
    check(CHART.is_dir(), f"no chart at {CHART}")
    chart = helm_python.Chart.load(str(CHART))
    CHART_APP_VERSION = str(chart.metadata.get("appVersion", ""))
    check(chart.metadata.get("apiVersion") == "v2", "Chart.yaml: apiVersion is not v2")
    gpu = load_yaml(GPU_VALUES)
    binary = premem_binary()
    print(
        f"chart {chart.name} {chart.version} (app {CHART_APP_VERSION}); Helm SDK {helm_python.helm_sdk_version()}; "
        f"schemas: Kubernetes {KUBE_VERSION} (kubernetes-validate, strict)"
    )
    if binary is None:
        print("note: no premem binary (PREMEM_BIN, target/*/premem, PATH): the specs are parsed as TOML only")

    failures = 0
    for name, user_values, extra in value_sets(gpu):
        try:
            lint = helm_python.lint(
                str(CHART), user_values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0"
            )
            errors = lint.get("errors") or [m["error"] for m in lint.get("messages", []) if m.get("severity", 0) >= 2]
            check(not errors, f"helm lint --strict: {errors}")
            manifests, values = render(chart, user_values)
            objects, notes = parse(manifests)
            r = Rendered(name, values, objects, notes)
            validated, skipped = validate_schemas(objects)
            check_labels(r)
            check_security(r)
            check_references(r)
            facts = check_flow(r)
            if extra:
                extra(r)
            parsed_by = "TOML"
            if binary:
                check_spec_with_premem(binary, r, facts)
                parsed_by = "premem"
            skip_note = f"; schema check skipped for non-core API {', '.join(skipped)}" if skipped else ""
            print(
                f"ok   {name}: {len(objects)} objects rendered, {validated} validated against Kubernetes {KUBE_VERSION}"
                f"{skip_note}; {facts['kind']} spec ({parsed_by}) world size {facts['world']}, "
                f"trainers {values['trainer']['replicas']} x {values['trainer']['gpus']} GPU ({facts['mode']}), "
                f"evaluators {values['evaluator']['replicas']} x {values['evaluator']['gpus']} GPU, "
                f"{facts['premem_containers']} premem containers"
            )
        except (Failure, helm_python.HelmError) as e:
            failures += 1
            print(f"FAIL {name}: {e}")

    refusals = refused(chart.values)
    for name, user_values, needle in refusals:
        try:
            chart.render(user_values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            failures += 1
            print(f"FAIL refused values ({name}): the chart rendered them")
        except helm_python.HelmError as e:
            if needle in str(e):
                message = re.sub(r"^.*execution error at \([^)]*\): ", "", str(e).strip().splitlines()[-1])
                print(f"ok   refused values ({name}): {message}")
            else:
                failures += 1
                print(f"FAIL refused values ({name}): the message does not say `{needle}`: {e}")

    total = len(value_sets(gpu)) + len(refusals)
    print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
