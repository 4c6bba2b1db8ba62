#!/usr/bin/env python3
"""Prints the shell steps of a CI recipe, for tests/ci_recipes.rs to run for real.

    recipe.py github FILE | gitlab FILE | kubernetes FILE TOKEN_DIR

github: the `run:` steps of the one job, each a `bash -e` script (GitHub's
default shell), after checking `permissions: id-token: write`. gitlab: the
`script:` lines of the one job, after checking its `id_tokens` entry. kubernetes:
the container's `sh -c` command, after a strict schema validation and checking
the projected token's audience; its token path is moved under TOKEN_DIR.
Job-level env and variables are printed as `export` lines the test may override
(it sets GATEHOUSE_* and PG* afterwards). Exits 1 on a recipe that cannot work.
"""

import shlex
import sys

import yaml


def fail(msg):
    print(f"recipe.py: {msg}", file=sys.stderr)
    sys.exit(1)


def exports(env):
    return "".join(f"export {k}=${{{k}:-{shlex.quote(str(v))}}}\n" for k, v in env.items())


def github(doc):
    if doc.get("permissions", {}).get("id-token") != "write":
        fail("the workflow lacks `permissions: id-token: write`")
    (job,) = doc["jobs"].values()
    scripts = [s["run"] for s in job["steps"] if "run" in s]
    if not scripts:
        fail("no run steps")
    out = exports(job.get("env", {}))
    for s in scripts:
        out += f"bash -e <<'STEP'\n{s}\nSTEP\n"
    return out


def gitlab(doc):
    (job,) = [v for k, v in doc.items() if isinstance(v, dict) and "script" in v]
    ids = job.get("id_tokens", {})
    if ids.get("GATEHOUSE_ID_TOKEN", {}).get("aud") != "gatehouse":
        fail("no id_tokens GATEHOUSE_ID_TOKEN with aud gatehouse")
    out = exports(job.get("variables", {}))
    out += "set -e\n" + "".join(line + "\n" for line in job["script"])
    return out


def kubernetes(doc, token_dir):
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.30.0", strict=True)
    pod = doc["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = {e["name"]: e["value"] for e in c["env"]}
    token_file = env["GATEHOUSE_TOKEN_FILE"]
    ok = False
    for m in c["volumeMounts"]:
        for src in volumes[m["name"]].get("projected", {}).get("sources", []):
            sa = src.get("serviceAccountToken")
            if sa and f"{m['mountPath']}/{sa['path']}" == token_file and sa.get("audience") == "gatehouse":
                ok = True
    if not ok:
        fail(f"{token_file} is no projected token for audience gatehouse")
    env["GATEHOUSE_TOKEN_FILE"] = f"{token_dir}/token"
    if c["command"] != ["sh", "-c"]:
        fail("expected command sh -c")
    return exports(env) + f"sh -c {shlex.quote(c['args'][0])}\n"


def main():
    kind, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if kind == "github":
        print(github(doc))
    elif kind == "gitlab":
        print(gitlab(doc))
    elif kind == "kubernetes":
        print(kubernetes(doc, sys.argv[3]))
    else:
        fail(f"unknown recipe kind {kind}")


if __name__ == "__main__":
    main()
