#!/usr/bin/env python3
"""Checks Gatehouse's Kubernetes manifests offline, the way a cluster would use them.

    check.py --gatehouse BIN [--kubernetes-version 1.30] MANIFEST... [--secrets FILE]

For every document: no duplicated key (kubectl rejects them; PyYAML would keep
the last), and a strict schema validation (kubernetes-validate, PyPI). For every
container that runs `gatehouse serve`: the files its volumes would hold are laid
out under a scratch root (ConfigMaps and Secrets from the given files, the
cluster's own kube-root-ca.crt), then `gatehouse config check --role R --root`
checks its config against exactly those files; evidence and archive directories
must be on a persistent volume, password_env variables set, probes on the admin
listener's /healthz and /readyz, resource requests present, and every workload
covered by a PodDisruptionBudget. Exits 1 on any problem, naming it.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with a key twice."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicated key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


# Made by Kubernetes in every namespace.
BUILTIN_CONFIGMAPS = {"kube-root-ca.crt": {"ca.crt": "cluster CA placeholder\n"}}


def load(paths):
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.load_all(f, Loader=UniqueKeyLoader):
                if doc:
                    docs.append((path, doc))
    return docs


def volume_files(volume, configmaps, secrets):
    """The files (name -> text) a configMap or secret volume holds; None: other kinds."""
    if "configMap" in volume:
        src, data = volume["configMap"], configmaps.get(volume["configMap"]["name"])
    elif "secret" in volume:
        src, data = volume["secret"], secrets.get(volume["secret"]["secretName"])
    else:
        return None
    if data is None:
        raise LookupError(f"volume {volume['name']}: no such ConfigMap or Secret in the files given")
    if "items" not in src:
        return dict(data)
    files = {}
    for item in src["items"]:
        if item["key"] not in data:
            raise LookupError(f"volume {volume['name']}: no key {item['key']}")
        files[item["path"]] = data[item["key"]]
    return files


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def check_container(pod, container, claims, configmaps, secrets, gatehouse, problems, where):
    args = container.get("args", [])
    if "serve" not in args or "--config" not in args:
        return
    role = args[args.index("--role") + 1] if "--role" in args else "all"
    config_path = args[args.index("--config") + 1]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = container.get("volumeMounts", [])
    with tempfile.TemporaryDirectory() as root:
        root = pathlib.Path(root)
        for m in mounts:
            name, target = m["name"], m["mountPath"]
            if name in claims:
                (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
                continue
            if name not in volumes:
                problems.append(f"{where}: mount {name} has no volume")
                continue
            try:
                files = volume_files(volumes[name], configmaps, secrets)
            except LookupError as e:
                problems.append(f"{where}: {e}")
                continue
            if files is None:
                continue
            if "subPath" in m:
                if m["subPath"] not in files:
                    problems.append(f"{where}: mount {name}: no {m['subPath']} for subPath")
                    continue
                files = {"": files[m["subPath"]]}
            for rel, text in files.items():
                dest = root / target.lstrip("/") / rel if rel else root / target.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(text)
        config_file = root / config_path.lstrip("/")
        if not config_file.is_file():
            problems.append(f"{where}: the config {config_path} is not mounted")
            return
        run = subprocess.run(
            [gatehouse, "config", "check", "--role", role, "--root", str(root), str(config_file)],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            problems.append(f"{where}: gatehouse config check --role {role}:\n{run.stderr}{run.stdout}")
            return
        cfg = tomllib.loads(config_file.read_text())
    # State must survive rescheduling: a persistent volume, writable.
    for section in ("evidence", "archiver"):
        d = cfg.get(section, {}).get("dir")
        if section == "evidence" and cfg.get("evidence", {}).get("mode", "local") != "local":
            continue
        if d is None or (section == "archiver" and role != "archiver"):
            continue
        mount = next((m for m in mounts if under(d, m["mountPath"])), None)
        if mount is None or mount["name"] not in claims or mount.get("readOnly"):
            problems.append(f"{where}: [{section}] dir {d} is not on a writable persistent volume")
    env = {e["name"] for e in container.get("env", [])}
    for name, r in cfg.get("roles", {}).items():
        var = r.get("password_env")
        if var and var not in env:
            problems.append(f"{where}: role {name}: password_env {var} is not set in the container")
    admin = cfg.get("admin", {}).get("listen")
    if admin is None:
        problems.append(f"{where}: no [admin] listen for the probes and metrics")
        return
    admin_port = int(admin.rsplit(":", 1)[1])
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet")
        port = get and ports.get(get["port"], get["port"])
        if not get or get.get("path") != path or port != admin_port:
            problems.append(f"{where}: {probe} must GET {path} on the admin port {admin_port}")
    annotations = pod.get("_annotations", {})
    if annotations.get("prometheus.io/port") != str(admin_port):
        problems.append(f"{where}: prometheus.io/port must be the admin port {admin_port}")
    if not container.get("resources", {}).get("requests"):
        problems.append(f"{where}: no resource requests")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("--kubernetes-version", default="1.30.0")
    ap.add_argument("--secrets", help="a file of Secrets (and ConfigMaps) the manifests mount")
    ap.add_argument("manifests", nargs="+")
    a = ap.parse_args()
    problems = []
    try:
        docs = load(a.manifests + ([a.secrets] if a.secrets else []))
    except yaml.YAMLError as e:
        print(f"check.py: {e}", file=sys.stderr)
        return 1
    configmaps = dict(BUILTIN_CONFIGMAPS)
    secrets = {}
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, a.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {e.message} at {list(e.path)}")
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap":
            configmaps[name] = doc.get("data", {})
        elif doc["kind"] == "Secret":
            secrets[name] = {**doc.get("data", {}), **doc.get("stringData", {})}
    pdbs = [d["spec"]["selector"]["matchLabels"] for _, d in docs if d["kind"] == "PodDisruptionBudget"]
    checked = 0
    for path, doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = doc["spec"]
        pod = dict(spec["template"]["spec"])
        pod["_annotations"] = spec["template"]["metadata"].get("annotations", {})
        labels = spec["template"]["metadata"]["labels"]
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdbs):
            problems.append(f"{path}: {doc['kind']}/{doc['metadata']['name']}: no PodDisruptionBudget")
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        claims |= {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in pod["containers"]:
            where = f"{path}: {doc['kind']}/{doc['metadata']['name']}/{c['name']}"
            check_container(pod, c, claims, configmaps, secrets, a.gatehouse, problems, where)
            checked += 1
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(docs)} documents, {checked} containers: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
