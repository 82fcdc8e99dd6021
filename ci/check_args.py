#!/usr/bin/env python3
"""Every flag and environment variable the chart gives restrictor exists in the real binary.

Usage: check_args.py RESTRICTOR_BIN RENDERED.yaml...

For every container of a rendered Deployment/Job that runs the restrictor image:
  1. args[0] is a subcommand of the binary (`restrictor <sub> --help` succeeds);
  2. every other arg is `--flag` or `--flag=value` and the flag appears in `<sub> --help`;
  3. every env var is one `<sub> --help` lists (`[env: NAME=]`);
  4. `restrictor <args...> --help` exits 0 with that environment: clap parses (and runs the value
     parsers of) every arg before the trailing --help, so a bad duration or number fails here.
Prints one line per finding; exits 1 if any check failed.
"""
import os
import re
import subprocess
import sys

import yaml

HELP_CACHE = {}


def help_of(binary, sub):
    if sub not in HELP_CACHE:
        r = subprocess.run([binary, sub, "--help"], capture_output=True, text=True)
        if r.returncode != 0:
            HELP_CACHE[sub] = None
        else:
            flags = set(re.findall(r"^\s+(?:-\w, )?--([a-z0-9][a-z0-9-]*)", r.stdout, re.M))
            envs = set(re.findall(r"\[env: ([A-Z0-9_]+)=", r.stdout))
            HELP_CACHE[sub] = (flags, envs)
    return HELP_CACHE[sub]


def containers(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            yield f"{kind}/{doc['metadata']['name']}/{c['name']}", c


def main():
    binary, files = sys.argv[1], sys.argv[2:]
    failures, checked = [], 0

    def fail(msg):
        failures.append(msg)
        print(f"  {msg}")

    for path in files:
        scenario = os.path.basename(path)
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            for where, c in containers(doc):
                if "/restrictor" not in c.get("image", ""):
                    continue
                where = f"{scenario}: {where}"
                args = c.get("args", [])
                if not args:
                    fail(f"{where}: no args (the image's CMD would be used)")
                    continue
                sub = args[0]
                known = help_of(binary, sub)
                if known is None:
                    fail(f"{where}: '{sub}' is not a subcommand of {binary}")
                    continue
                flags, envs = known
                for a in args[1:]:
                    checked += 1
                    if not a.startswith("--"):
                        fail(f"{where}: argument {a!r} is not a --flag")
                    elif a[2:].split("=", 1)[0] not in flags:
                        fail(f"{where}: {a.split('=', 1)[0]} is not a flag of `restrictor {sub}`")
                env = {"PATH": os.environ.get("PATH", "")}
                for e in c.get("env", []):
                    checked += 1
                    if e["name"] not in envs:
                        fail(f"{where}: env {e['name']} is not read by `restrictor {sub}`")
                    # downward-API values are resolved by the kubelet; any name will do here
                    env[e["name"]] = e.get("value", "restrictor-placeholder")
                r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, env=env)
                checked += 1
                if r.returncode != 0:
                    fail(f"{where}: `restrictor {' '.join(args)}` is rejected: {r.stderr.strip()}")
    print(f"check_args: {checked - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
