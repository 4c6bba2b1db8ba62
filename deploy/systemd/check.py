#!/usr/bin/env python3
"""Checks Gatehouse's systemd units and the configs they run.

    check.py --gatehouse BIN UNIT...

For every unit: `systemd-analyze verify` (with ExecStart pointed at BIN, the one
change; any warning counts as a problem), ExecReload= sending SIGHUP, and its
config (deploy/gatehouse.example.toml for the all-in-one unit, the config its
install comment writes for the others) through `gatehouse config check --role`;
then the config's paths must be the unit's: keys and passwords under
/run/credentials/UNIT/ with a LoadCredential= of that name, state directories
under a StateDirectory=, everything else under the ConfigurationDirectory=.
Exits 1 on any problem, naming it.
"""

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[2]
# Keys whose files hold a secret: never a plain file under /etc.
SECRET_KEYS = {"signing_key", "password_file", "key", "hash_key_file"}
PATH_KEYS = SECRET_KEYS | {"policy", "dir", "cert", "ca_file", "jwks_file", "jwks_ca_file"}


def directives(text):
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def unit_config(unit_text, config_path):
    """The TOML the unit's install comment puts at config_path."""
    comment = "\n".join(l[2:] if l.startswith("# ") else l[1:] for l in unit_text.splitlines() if l.startswith("#"))
    m = re.search(r"cat > " + re.escape(config_path) + r" <<'TOML'\n(.*?)\n\s*TOML\b", comment, re.S)
    if m:
        return m.group(1) + "\n"
    m = re.search(r"install -m \d+ (deploy/\S+) " + re.escape(config_path), comment)
    if m:
        return (REPO / m.group(1)).read_text()
    return None


def paths(cfg, role):
    """(section.key, path) of every file or directory the role reads."""
    sections = []
    if role in ("all", "ingress"):
        sections += [("ingress", cfg.get("ingress", {})), ("ingress.tls", cfg.get("ingress", {}).get("tls", {}))]
        sections += [("evidence", cfg.get("evidence", {})), ("masking", cfg.get("masking", {}))]
        sections += [(f"issuers.{i.get('name')}", i) for i in cfg.get("issuers", [])]
        for name, r in cfg.get("roles", {}).items():
            sections += [(f"roles.{name}", r), (f"roles.{name}.upstream", r.get("upstream", {}))]
    if role in ("all", "decider"):
        sections.append(("decider", cfg.get("decider", {})))
    if role == "archiver":
        sections.append(("archiver", cfg.get("archiver", {})))
    if role in ("all", "approver"):
        sections += [(f"approvals.issuers.{i.get('name')}", i) for i in cfg.get("approvals", {}).get("issuers", [])]
    for where, sec in sections:
        for k, v in sec.items():
            if k in PATH_KEYS and isinstance(v, str) and not (where == "ingress" and k == "key"):
                yield f"{where}.{k}", k, v


def check_unit(path, gatehouse, problems):
    text = path.read_text()
    name = path.name
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / name
        copy.write_text(text.replace("ExecStart=/usr/local/bin/gatehouse", f"ExecStart={gatehouse}"))
        run = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
        if run.returncode != 0 or run.stderr.strip():
            problems.append(f"{name}: systemd-analyze verify:\n{run.stderr}{run.stdout}")
    d = directives(text)
    if not any(re.fullmatch(r"/bin/kill -HUP \$MAINPID", r) for r in d.get("ExecReload", [])):
        problems.append(f"{name}: no ExecReload=/bin/kill -HUP $MAINPID")
    argv = shlex.split(d["ExecStart"][0])
    role = argv[argv.index("--role") + 1] if "--role" in argv else "all"
    config_path = argv[argv.index("--config") + 1]
    text_cfg = unit_config(text, config_path)
    if text_cfg is None:
        problems.append(f"{name}: its install comment writes no {config_path}")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(text_cfg)
        f.flush()
        run = subprocess.run(
            [gatehouse, "config", "check", "--role", role, "--skip-files", f.name], capture_output=True, text=True
        )
        if run.returncode != 0:
            problems.append(f"{name}: config check --role {role} of {config_path}:\n{run.stderr}")
            return
    cfg = tomllib.loads(text_cfg)
    creds = {c.split(":", 1)[0] for c in d.get("LoadCredential", [])}
    states = [f"/var/lib/{s}" for v in d.get("StateDirectory", []) for s in v.split()]
    confs = [f"/etc/{s}" for v in d.get("ConfigurationDirectory", []) for s in v.split()]
    cred_dir = f"/run/credentials/{name}/"
    for where, key, p in paths(cfg, role):
        if p.startswith(cred_dir):
            if p[len(cred_dir):] not in creds:
                problems.append(f"{name}: {where} = {p}: no LoadCredential={p[len(cred_dir):]}:...")
        elif key in SECRET_KEYS:
            problems.append(f"{name}: {where} = {p}: a secret; hand it over with LoadCredential= ({cred_dir}...)")
        elif key == "dir":
            if not any(p == s or p.startswith(s + "/") for s in states):
                problems.append(f"{name}: {where} = {p} is under no StateDirectory= ({states})")
        elif not any(p.startswith(c + "/") for c in confs):
            problems.append(f"{name}: {where} = {p} is under no ConfigurationDirectory= ({confs})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gatehouse", required=True)
    ap.add_argument("units", nargs="+")
    a = ap.parse_args()
    problems = []
    for u in a.units:
        check_unit(pathlib.Path(u), a.gatehouse, problems)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"{len(a.units)} units: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
