#!/usr/bin/env bash
# deploy/docker-run.sh - the agent on a Docker host, as the seed runs its
# agent: host network and PID namespace, privileged, the Docker socket, the
# host's root read-only at /host (runc and the bundles, for pre-start
# attach) and its /proc at /host/proc, checkpoints kept on the host, and /run/portwarden shared so
# the `portwarden` CLI on the host reaches the agent's API socket. IMAGE
# defaults to the image scripts/build-image.sh makes.
set -euo pipefail
image=${IMAGE:-localhost/portwarden:dev}
exec docker run -d --name portwarden --restart unless-stopped \
  --net=host --pid=host --privileged \
  -v /var/run/docker.sock:/var/run/docker.sock \
  -v /:/host:ro -e PORTWARDEN_HOST_ROOT=/host \
  -v /proc:/host/proc:ro \
  -v /var/lib/portwarden:/var/lib/portwarden \
  -v /run/portwarden:/run/portwarden \
  -v /var/log/pods:/var/log/pods:ro \
  "$image" run
