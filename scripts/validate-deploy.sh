#!/usr/bin/env bash
# scripts/validate-deploy.sh - check deploy/ offline: the Kubernetes
# DaemonSets against the API schema (kubernetes-validate, from PyPI), the
# Helm chart's metadata and values as YAML, the ECS task definitions as JSON
# with the keys they rely on, and the docker run scripts' syntax. (The Helm
# templates themselves need `helm template`, which is not installed here.)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate >&2
kubernetes-validate --quiet --strict -k 1.30.0 deploy/kubernetes/*.yaml
python3 - <<'PY'
import json, yaml
for f in ("deploy/helm/portwarden/Chart.yaml", "deploy/helm/portwarden/values.yaml"):
    yaml.safe_load(open(f))
values = yaml.safe_load(open("deploy/helm/portwarden/values.yaml"))
assert "containerSocket" in values and "containerSocketFrom" in values, "helm values"
for f in ("deploy/ecs/task-definition-ec2.json", "deploy/ecs/fargate-sidecar.json"):
    task = json.load(open(f))
    assert task["containerDefinitions"], f
ec2 = json.load(open("deploy/ecs/task-definition-ec2.json"))
assert ec2["networkMode"] == "host" and ec2["containerDefinitions"][0]["privileged"]
fargate = json.load(open("deploy/ecs/fargate-sidecar.json"))
router = next(c for c in fargate["containerDefinitions"] if c["name"] == "log_router")
assert router["entryPoint"] == ["/opt/portwarden/fluent-bit/fluent-launch"]
# Fargate accepts SYS_PTRACE as the only added capability; NET_RAW is in its default set.
for c in fargate["containerDefinitions"]:
    added = c.get("linuxParameters", {}).get("capabilities", {}).get("add", [])
    assert set(added) <= {"SYS_PTRACE"}, f"{c['name']}: Fargate rejects added capabilities {added}"
print("deploy/: helm metadata, ECS task definitions ok")
PY
for s in deploy/*.sh; do bash -n "$s"; done
echo "deploy/: Kubernetes manifests valid for 1.30"
