#!/usr/bin/env python3
"""Offline checks of portcullis's deployment files; run by scripts/validate-manifests.

Checks, with no cluster and no network:

- every YAML file under istio/ parses, with duplicate keys refused;
- each Kubernetes object of the rendered kustomize overlays against the
  Kubernetes JSON schemas of the `kubernetes-validate` package (strict:
  unknown fields are errors), for the oldest and newest Kubernetes versions
  we support;
- each AuthorizationPolicy against istio/schemas/authorizationpolicy.schema.json,
  plus Istio's own rules for CUSTOM policies;
- the meshConfig files of istio/mesh/ against
  istio/schemas/meshconfig-extensionproviders.schema.json, and that both
  files declare the same providers;
- that the pieces fit: selectors select the pods, Services target declared
  container ports, the providers' ports exist on the Service with the right
  protocol, the configuration's listeners match the ports, the security
  settings the docs promise are there;
- the Dockerfile with BuildKit's own parser (the `dockerfile` package);
- optionally (--portcullis BIN) the configuration of each overlay with
  `portcullis check-config`.

Exit status 0 when everything holds, 1 otherwise. Output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from kubernetes_validate import utils as kv
from referencing import Registry, Resource

# Kubernetes versions the manifests must be valid for: the oldest we support
# (gRPC probes GA 1.27, HPA ContainerResource GA 1.30) and the newest the
# schema package knows.
KUBERNETES_VERSIONS = ("1.30", "1.37")

# Istio rejects these in CUSTOM policies (pkg/config/validation): the
# authorizer, not Istio, decides on identities and JWT claims.
CUSTOM_FORBIDDEN_SOURCE = (
    "principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals",
    "namespaces", "notNamespaces", "serviceAccounts", "notServiceAccounts",
    "trustDomains", "notTrustDomains",
)
CUSTOM_FORBIDDEN_WHEN_PREFIXES = (
    "source.namespace", "source.serviceAccount", "source.trustDomain",
    "source.principal", "request.auth.",
)

IDENTITY_HEADERS = [
    "x-portcullis-subject", "x-portcullis-username", "x-portcullis-realm-roles",
    "x-portcullis-client", "x-portcullis-issuer",
]


class Report:
    """Collects findings; prints them in a stable order."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checked: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"ERROR {where}: {message}")

    def ok(self, what: str) -> None:
        self.checked.append(what)


# ---------------------------------------------------------------- YAML

class StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML keeps the last)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen[key] = loader.construct_object(value_node, deep=deep)
    return seen


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_all(path: Path, report: Report) -> list[Any] | None:
    try:
        return [d for d in yaml.load_all(path.read_text(), Loader=StrictLoader) if d is not None]
    except yaml.YAMLError as e:
        report.error(str(path), f"YAML: {e}")
        return None


# ---------------------------------------------------------------- schemas

def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top)"


def schema_errors(schema: dict, instance: Any, registry: Registry | None = None) -> list[str]:
    kwargs = {"registry": registry} if registry is not None else {}
    validator = jsonschema.Draft202012Validator(schema, **kwargs)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (_path(e), e.message))
    return [f"{_path(e)}: {e.message}" for e in errors]


_k8s_cache: dict[tuple[str, str], tuple[dict, Registry] | None] = {}


def kubernetes_schema(obj: dict, version: str) -> tuple[dict, Registry] | None:
    """The strict schema of kubernetes-validate for this object's kind."""
    api_version = obj.get("apiVersion", "")
    group_version = api_version.split("/")
    if len(group_version) == 2:
        group = group_version[0].split(".")[0]
        name = f"{obj.get('kind', '').lower()}-{group}-{group_version[1]}.json"
    else:
        name = f"{obj.get('kind', '').lower()}-{api_version}.json"
    key = (version, name)
    if key not in _k8s_cache:
        folder = f"kubernetes-json-schema/v{version}.0-local-strict"
        try:
            schema = kv.schema_contents(f"{folder}/{name}", version)
        except FileNotFoundError:
            _k8s_cache[key] = None
        else:
            definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
            registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
            _k8s_cache[key] = (schema, registry)
    return _k8s_cache[key]


def describe(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {ns + '/' if ns else ''}{name}"


# ---------------------------------------------------------------- Istio rules

def check_authorization_policy(where: str, obj: dict, schema: dict, providers: set[str],
                               report: Report) -> None:
    errors = schema_errors(schema, obj)
    for e in errors:
        report.error(where, f"{describe(obj)}: {e}")
    if errors:
        return
    spec = obj["spec"]
    action = spec.get("action", "ALLOW")
    name = describe(obj)
    if "provider" in spec and action != "CUSTOM":
        report.error(where, f"{name}: `provider` is only allowed with action CUSTOM")
    if spec.get("selector") and spec.get("targetRefs"):
        report.error(where, f"{name}: `selector` and `targetRefs` are mutually exclusive")
    if action != "CUSTOM":
        report.ok(f"{where}: {name} (Istio schema)")
        return
    provider = (spec.get("provider") or {}).get("name")
    if not provider:
        report.error(where, f"{name}: a CUSTOM policy needs `provider.name`")
    elif provider not in providers:
        report.error(where, f"{name}: provider {provider!r} is not among the extension providers "
                            f"of istio/mesh/ ({', '.join(sorted(providers))})")
    rules = spec.get("rules")
    if not rules:
        report.error(where, f"{name}: a CUSTOM policy without rules never applies "
                            "(istiod refuses it); `rules: [{{}}]` means every request")
    for i, rule in enumerate(rules or []):
        for j, source in enumerate(rule.get("from") or []):
            for field in CUSTOM_FORBIDDEN_SOURCE:
                if field in (source.get("source") or {}):
                    report.error(where, f"{name}: rules/{i}/from/{j}/source/{field} is not allowed "
                                        "in a CUSTOM policy")
        for j, cond in enumerate(rule.get("when") or []):
            if cond.get("key", "").startswith(CUSTOM_FORBIDDEN_WHEN_PREFIXES):
                report.error(where, f"{name}: rules/{i}/when/{j} key {cond['key']!r} is not allowed "
                                    "in a CUSTOM policy")
    report.ok(f"{where}: {name} (Istio schema, CUSTOM rules)")


def check_mesh(repo: Path, schema: dict, report: Report) -> dict[str, dict]:
    """Validates istio/mesh/; returns the providers by name."""
    files = {
        "istioctl-extension-providers.yaml": ("istioOperator", lambda d: d["spec"]["meshConfig"]),
        "istiod-helm-values.yaml": ("istiodValues", lambda d: d["meshConfig"]),
    }
    found: dict[str, list] = {}
    for filename, (definition, mesh_of) in sorted(files.items()):
        path = repo / "istio" / "mesh" / filename
        where = str(path.relative_to(repo))
        if not path.exists():
            report.error(where, "missing")
            continue
        docs = load_all(path, report)
        if docs is None:
            continue
        if len(docs) != 1:
            report.error(where, f"expected one YAML document, found {len(docs)}")
            continue
        wrapper = dict(schema, **{"$ref": f"#/$defs/{definition}"})
        errors = schema_errors(wrapper, docs[0])
        for e in errors:
            report.error(where, e)
        if errors:
            continue
        providers = mesh_of(docs[0])["extensionProviders"]
        names = [p["name"] for p in providers]
        if len(set(names)) != len(names):
            report.error(where, f"provider names repeat: {names}")
        for p in providers:
            grpc = p.get("envoyExtAuthzGrpc")
            http = p.get("envoyExtAuthzHttp")
            body = grpc or http
            if "timeout" not in body:
                report.error(where, f"provider {p['name']}: no explicit timeout (istiod's default is 600s)")
            if body.get("failOpen", False):
                report.error(where, f"provider {p['name']}: failOpen must be false (fail closed)")
            if http is not None:
                included = {h.lower() for h in http.get("includeRequestHeadersInCheck", [])}
                if "authorization" not in included:
                    report.error(where, f"provider {p['name']}: includeRequestHeadersInCheck "
                                        "must include authorization")
                upstream = [h.lower() for h in http.get("headersToUpstreamOnAllow", [])]
                if sorted(upstream) != sorted(IDENTITY_HEADERS):
                    report.error(where, f"provider {p['name']}: headersToUpstreamOnAllow must be "
                                        f"exactly {IDENTITY_HEADERS}")
        found[filename] = providers
        report.ok(f"{where}: {len(providers)} extension providers (mesh schema)")
    if len(found) == 2:
        a, b = found.values()
        if a != b:
            report.error("istio/mesh", "the istioctl and Helm files declare different providers")
    return {p["name"]: p for providers in found.values() for p in providers}


# ---------------------------------------------------------------- bundles

def selects(selector: dict | None, labels: dict | None) -> bool:
    match = (selector or {}).get("matchLabels", selector or {})
    if not match:
        return False
    labels = labels or {}
    return all(labels.get(k) == v for k, v in match.items())


def check_bundle(where: str, objects: list[dict], providers: dict[str, dict],
                 portcullis: str | None, base_config: dict, report: Report) -> None:
    """Cross-object checks of one rendered overlay. Its mode is HTTP when its
    configuration sets listen.http, else gRPC."""
    by_kind: dict[str, list[dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj.get("kind", ""), []).append(obj)
        if obj.get("kind") != "Namespace" and not (obj.get("metadata") or {}).get("namespace"):
            report.error(where, f"{describe(obj)}: no namespace")

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        report.error(where, f"expected one Deployment, found {len(deployments)}")
        return
    deploy = deployments[0]
    spec = deploy["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"].get("labels", {})
    pod_spec = pod["spec"]
    name = describe(deploy)
    ns = deploy["metadata"]["namespace"]

    if not selects(spec.get("selector"), pod_labels):
        report.error(where, f"{name}: selector does not select its own pod template")
    if "replicas" in spec:
        report.error(where, f"{name}: sets replicas, which the HorizontalPodAutoscaler owns")

    # Security settings the docs promise.
    pod_sc = pod_spec.get("securityContext") or {}
    containers = {c["name"]: c for c in pod_spec.get("containers", [])}
    main = containers.get("portcullis")
    if main is None:
        report.error(where, f"{name}: no container named portcullis")
        return
    sc = main.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
        report.error(where, f"{name}: runAsNonRoot is not set")
    if (sc.get("runAsUser", pod_sc.get("runAsUser")) or 0) == 0:
        report.error(where, f"{name}: runs as user 0")
    if sc.get("readOnlyRootFilesystem") is not True:
        report.error(where, f"{name}: root filesystem is not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        report.error(where, f"{name}: allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        report.error(where, f"{name}: capabilities are not all dropped")
    requests = (main.get("resources") or {}).get("requests") or {}
    if not {"cpu", "memory"} <= set(requests):
        report.error(where, f"{name}: cpu and memory requests are needed (the autoscaler uses cpu)")

    ports = {p["name"]: p["containerPort"] for p in main.get("ports", []) if "name" in p}
    port_numbers = set(ports.values())

    def probe_port(probe: dict) -> int | None:
        for kind in ("grpc", "httpGet", "tcpSocket"):
            if kind in probe:
                port = probe[kind]["port"]
                return ports.get(port) if isinstance(port, str) else port
        return None

    readiness = main.get("readinessProbe") or {}
    liveness = main.get("livenessProbe") or {}
    if "grpc" not in readiness:
        report.error(where, f"{name}: readiness must be a gRPC probe on the health service")
    elif readiness["grpc"].get("service", "") != "":
        report.error(where, f"{name}: the readiness probe must ask for the whole server (service \"\")")
    if not liveness:
        report.error(where, f"{name}: no liveness probe")
    elif liveness.get("grpc", {}).get("service", "") in ("", "envoy.service.auth.v3.Authorization") \
            and "grpc" in liveness:
        report.error(where, f"{name}: liveness on the gRPC health service would restart pods whenever "
                            "keys are missing (docs/istio.md, Probes)")
    for label, probe in (("readiness", readiness), ("liveness", liveness)):
        if probe and probe_port(probe) not in port_numbers:
            report.error(where, f"{name}: the {label} probe's port is not a container port")

    # Volumes: the ConfigMap must be in the bundle; a Secret may be absent only if optional.
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    config_doc = None
    for volume in pod_spec.get("volumes", []):
        if "configMap" in volume:
            cm = configmaps.get(volume["configMap"]["name"])
            if cm is None:
                report.error(where, f"{name}: volume {volume['name']} names ConfigMap "
                                    f"{volume['configMap']['name']}, which is not in the bundle")
            else:
                config_doc = cm
        if "secret" in volume and not volume["secret"].get("optional", False):
            report.error(where, f"{name}: volume {volume['name']} needs a Secret that is not in the bundle")
    mounts = {m["name"] for m in main.get("volumeMounts", [])}
    for volume in pod_spec.get("volumes", []):
        if volume["name"] not in mounts:
            report.error(where, f"{name}: volume {volume['name']} is not mounted")

    accounts = {a["metadata"]["name"] for a in by_kind.get("ServiceAccount", [])}
    if pod_spec.get("serviceAccountName") not in accounts:
        report.error(where, f"{name}: ServiceAccount {pod_spec.get('serviceAccountName')} is not in the bundle")

    # Services: select the pods, target declared ports.
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for svc in services.values():
        if not selects(svc["spec"].get("selector"), pod_labels):
            report.error(where, f"{describe(svc)}: selector does not select the portcullis pods")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if (isinstance(target, str) and target not in ports) or \
               (isinstance(target, int) and target not in port_numbers):
                report.error(where, f"{describe(svc)}: port {port.get('name')} targets {target!r}, "
                                    "which the container does not declare")

    for policy in by_kind.get("AuthorizationPolicy", []):
        if not selects((policy.get("spec") or {}).get("selector"), pod_labels):
            report.error(where, f"{describe(policy)}: selector does not select the portcullis pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not selects(pdb["spec"].get("selector"), pod_labels):
            report.error(where, f"{describe(pdb)}: selector does not select the portcullis pods")
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if not hpas:
        report.error(where, "no HorizontalPodAutoscaler")
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != deploy["metadata"]["name"]:
            report.error(where, f"{describe(hpa)}: scaleTargetRef is not the portcullis Deployment")
        if hpa["spec"].get("minReplicas", 1) < 2:
            report.error(where, f"{describe(hpa)}: minReplicas below 2 leaves one authorizer")
    if not by_kind.get("PodDisruptionBudget"):
        report.error(where, "no PodDisruptionBudget")

    # The configuration: listeners match the ports.
    if config_doc is None:
        report.error(where, "no portcullis configuration ConfigMap")
        return
    data = (config_doc.get("data") or {}).get("portcullis.yaml")
    if data is None:
        report.error(where, f"{describe(config_doc)}: no portcullis.yaml key")
        return
    try:
        config = yaml.load(data, Loader=StrictLoader)
    except yaml.YAMLError as e:
        report.error(where, f"{describe(config_doc)}: portcullis.yaml: {e}")
        return
    mode = "http" if "http" in (config.get("listen") or {}) else "grpc"

    # The extension providers point at this Service, on a port of the right
    # protocol: gRPC (HTTP/2) for envoyExtAuthzGrpc, HTTP for envoyExtAuthzHttp
    # (the latter only in HTTP mode, where portcullis serves it).
    for pname, provider in sorted(providers.items()):
        for kind, protocol in (("envoyExtAuthzGrpc", "grpc"), ("envoyExtAuthzHttp", "http")):
            if kind not in provider or (protocol == "http" and mode != "http"):
                continue
            target = provider[kind]
            host = target["service"].split("/")[-1].split(".")
            svc = services.get(host[0])
            if svc is None or (len(host) > 1 and host[1] != ns):
                report.error(where, f"provider {pname}: service {target['service']} is not a Service "
                                    "of the bundle")
                continue
            port = next((p for p in svc["spec"].get("ports", []) if p["port"] == target["port"]), None)
            if port is None:
                report.error(where, f"provider {pname}: port {target['port']} is not on the Service")
                continue
            port_name = port.get("name", "")
            if not (port_name == protocol or port_name.startswith(protocol + "-")
                    or port.get("appProtocol") == protocol):
                report.error(where, f"provider {pname}: Service port {port_name!r} is neither named "
                                    f"{protocol}/{protocol}-* nor has appProtocol {protocol}, so Istio "
                                    f"would not speak {protocol} to it")

    args = main.get("args", [])
    if "--config" not in args[:-1] or not args[args.index("--config") + 1].endswith("/portcullis.yaml"):
        report.error(where, f"{name}: args do not pass --config .../portcullis.yaml")
    listen = config.get("listen") or {}
    expected = {"grpc": ("grpc", 9191), "admin": ("http-admin", 9192)}
    if mode == "http":
        expected["http"] = ("http-authz", 9193)
    for key, (port_name, default) in expected.items():
        addr = listen.get(key, f"0.0.0.0:{default}")
        port = int(str(addr).rsplit(":", 1)[-1])
        if ports.get(port_name) != port:
            report.error(where, f"listen.{key} is {addr}, but container port {port_name} is "
                                f"{ports.get(port_name)}")
        if not str(addr).startswith("0.0.0.0:"):
            report.error(where, f"listen.{key} is {addr}: in a pod it must listen on 0.0.0.0")
    if probe_port(readiness) != ports.get("grpc"):
        report.error(where, f"{name}: the readiness probe does not ask the gRPC port")

    # An HTTP-mode configuration is the base's plus listen.http.
    if mode == "http":
        stripped = json.loads(json.dumps(config))
        stripped.get("listen", {}).pop("http", None)
        if stripped != base_config:
            report.error(where, "portcullis.yaml differs from the base's by more than listen.http")

    # portcullis itself reads the configuration (not for listen.http, which
    # today's portcullis does not know yet).
    if portcullis and "http" not in listen:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "portcullis.yaml"
            path.write_text(data)
            result = subprocess.run([portcullis, "check-config", str(path)],
                                    capture_output=True, text=True, check=False)
        if result.returncode != 0:
            report.error(where, f"portcullis check-config: {result.stdout}{result.stderr}".strip())
        else:
            report.ok(f"{where}: portcullis check-config")
    report.ok(f"{where}: {len(objects)} objects fit together")


# ---------------------------------------------------------------- Dockerfile

DOCKERFILE_INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


def check_dockerfile(repo: Path, report: Report) -> None:
    """BuildKit's parser (the `dockerfile` package) reads the file as `docker
    build` would; the instruction and shape checks are ours."""
    import dockerfile

    where = "Dockerfile"
    try:
        commands = dockerfile.parse_file(str(repo / "Dockerfile"))
    except Exception as e:  # the parser's error type varies by version
        report.error(where, f"does not parse: {e}")
        return
    stages: list[list] = []
    names: set[str] = set()
    for c in commands:
        if c.cmd not in DOCKERFILE_INSTRUCTIONS:
            report.error(where, f"line {c.start_line}: unknown instruction {c.cmd}")
        if c.cmd == "FROM":
            if not c.value or not c.value[0]:
                report.error(where, f"line {c.start_line}: FROM without an image")
                return
            if len(c.value) == 3 and c.value[1].upper() == "AS":
                names.add(c.value[2].lower())
            stages.append([c])
        elif not stages and c.cmd != "ARG":
            report.error(where, f"line {c.start_line}: {c.cmd} before the first FROM")
        elif stages:
            stages[-1].append(c)
        for flag in c.flags:
            if flag.startswith("--from=") and c.cmd == "COPY" and flag[7:].lower() not in names:
                report.error(where, f"line {c.start_line}: COPY --from names no earlier stage")
    if len(stages) < 2:
        report.error(where, "not multi-stage")
        return
    final = stages[-1]
    base = final[0].value[0]
    if "distroless" not in base and base != "scratch":
        report.error(where, f"the runtime stage is {base}, not a distroless or scratch image")
    users = [c.value[0] for c in final if c.cmd == "USER" and c.value]
    if not users or users[-1].split(":")[0] in ("0", "root"):
        report.error(where, "the runtime stage does not switch to a non-root USER")
    elif not users[-1].split(":")[0].isdigit():
        report.error(where, "the runtime USER is not numeric; Kubernetes' runAsNonRoot cannot verify a name")
    copies = [c for c in final if c.cmd in ("COPY", "ADD")]
    if any(c.cmd == "ADD" for c in copies):
        report.error(where, "ADD in the runtime stage; use COPY")
    if not copies or not all(any(f.startswith("--from=") for f in c.flags) for c in copies):
        report.error(where, "the runtime stage must copy only from the build stage")
    if any(c.cmd == "RUN" for c in final):
        report.error(where, "RUN in the runtime stage (distroless has no shell)")
    if not any(c.cmd == "ENTRYPOINT" for c in final):
        report.error(where, "the runtime stage has no ENTRYPOINT")
    if not any(c.cmd == "RUN" and "--locked" in " ".join(c.value) for s in stages[:-1] for c in s):
        report.error(where, "the build does not use cargo --locked")
    report.ok(f"{where}: {len(stages)} stages, runtime {base}, user {users[-1] if users else '?'}")


# ---------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--rendered", action="append", default=[], metavar="NAME=FILE",
                        help="a kustomize render to check, named for the messages (repeatable)")
    parser.add_argument("--portcullis", help="a portcullis binary: also run check-config")
    args = parser.parse_args()
    repo: Path = args.repo.resolve()
    report = Report()

    schemas_dir = repo / "istio" / "schemas"
    schemas = {}
    for name in ("authorizationpolicy", "meshconfig-extensionproviders"):
        path = schemas_dir / f"{name}.schema.json"
        schemas[name] = json.loads(path.read_text())
        try:
            jsonschema.Draft202012Validator.check_schema(schemas[name])
        except jsonschema.SchemaError as e:
            report.error(str(path.relative_to(repo)), f"not a valid JSON Schema: {e.message}")

    # Every YAML file parses, duplicate keys refused.
    yaml_files = sorted(p for p in (repo / "istio").rglob("*") if p.suffix in (".yaml", ".yml"))
    for path in yaml_files:
        if load_all(path, report) is not None:
            report.ok(f"{path.relative_to(repo)}: YAML")

    providers = check_mesh(repo, schemas["meshconfig-extensionproviders"], report)

    def check_object(where: str, obj: Any) -> None:
        if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
            report.error(where, "not a Kubernetes object (apiVersion and kind)")
            return
        if obj["apiVersion"].startswith("security.istio.io/") and obj["kind"] == "AuthorizationPolicy":
            check_authorization_policy(where, obj, schemas["authorizationpolicy"], set(providers), report)
            return
        for version in KUBERNETES_VERSIONS:
            found = kubernetes_schema(obj, version)
            if found is None:
                report.error(where, f"{describe(obj)}: no schema for {obj['apiVersion']} "
                                    f"{obj['kind']} in Kubernetes {version}")
                continue
            schema, registry = found
            for e in schema_errors(schema, obj, registry):
                report.error(where, f"{describe(obj)} (Kubernetes {version}): {e}")
        report.ok(f"{where}: {describe(obj)} (Kubernetes {', '.join(KUBERNETES_VERSIONS)})")

    # The example policies.
    for path in sorted((repo / "istio" / "policies").glob("*.yaml")):
        where = str(path.relative_to(repo))
        for obj in load_all(path, report) or []:
            check_object(where, obj)

    # The rendered overlays.
    base_config = load_all(repo / "istio" / "base" / "portcullis.yaml", report) or [{}]
    for item in sorted(args.rendered):
        name, _, file = item.partition("=")
        where = f"render of {name}"
        objects = load_all(Path(file), report)
        if objects is None:
            continue
        for obj in objects:
            check_object(where, obj)
        check_bundle(where, objects, providers, args.portcullis, base_config[0], report)

    check_dockerfile(repo, report)

    for line in report.checked:
        print(f"ok    {line}")
    for line in report.errors:
        print(line)
    print(f"{len(report.checked)} passed, {len(report.errors)} failed")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
