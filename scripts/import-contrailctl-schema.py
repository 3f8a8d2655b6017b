#!/usr/bin/env python3
"""One-off import of the upstream contrailctl JSON schemas into the project's own
role schema (src/config/roles.json). The project owns the result: edit roles.json
directly from now on; this script only records where it came from.

usage: scripts/import-contrailctl-schema.py CONTRAILCTL_SCHEMA_DIR > src/config/roles.json
(CONTRAILCTL_SCHEMA_DIR: the upstream contrailctl `schema/` directory)
"""
import json, os, sys

src = sys.argv[1]
defs = json.load(open(os.path.join(src, "definitions.json")))["definitions"]
# Values the project requires per role; the upstream schemas mark none as required,
# but a container without them cannot start its services.
REQUIRED = {
    "controller": {"GLOBAL": ["controller_nodes"]},
    "analytics": {"GLOBAL": ["controller_nodes", "analytics_nodes", "analyticsdb_nodes"]},
    "analyticsdb": {"GLOBAL": ["controller_nodes", "analyticsdb_nodes"]},
    "agent": {"GLOBAL": ["controller_nodes"]},
    "lb": {"GLOBAL": ["controller_nodes"]},
    "kubemanager": {"GLOBAL": ["controller_nodes"]},
    "kubernetesagent": {"GLOBAL": ["controller_nodes"]},
    "vcenterplugin": {"GLOBAL": ["controller_nodes"]},
    "cephcontroller": {"GLOBAL": ["controller_nodes"]},
}
roles = {}
for f in sorted(os.listdir(src)):
    if f == "definitions.json" or not f.endswith(".json"):
        continue
    role = f[:-5]
    try:
        schema = json.load(open(os.path.join(src, f)))
    except json.JSONDecodeError:
        continue
    sections = []
    for name, sec in schema.get("properties", {}).items():
        if "$ref" in sec:
            sec = defs[sec["$ref"].split("/")[-1]]
        keys = []
        for key, spec in sec.get("properties", {}).items():
            keys.append({
                "name": key.lower(),
                "type": spec.get("type", "string"),
                "required": key in REQUIRED.get(role, {}).get(name, []),
                "description": spec.get("description", "").strip(),
            })
        sections.append({"name": name, "keys": keys})
    if sections:
        roles[role] = {"sections": sections}
json.dump({"roles": roles}, sys.stdout, indent=1, sort_keys=False)
print()
