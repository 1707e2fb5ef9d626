#!/usr/bin/env bash
# deploy/docker-run-caps.sh - the same as docker-run.sh, with only the
# capabilities the agent uses instead of --privileged: SYS_ADMIN and
# SYS_PTRACE to enter containers' namespaces (SYS_ADMIN also answers
# pre-start attach's fanotify events), NET_RAW to capture (detection
# hands frames to Suricata through a pipe: no NET_ADMIN). The host's /run
# is mounted for the one-agent-per-host lock, which /host/proc/1/root cannot
# reach without --privileged.
set -euo pipefail
image=${IMAGE:-localhost/portwarden:dev}
exec docker run -d --name portwarden --restart unless-stopped \
  --net=host --pid=host \
  --cap-add SYS_ADMIN --cap-add SYS_PTRACE --cap-add NET_RAW \
  -v /var/run/docker.sock:/var/run/docker.sock \
  -v /:/host:ro -e PORTWARDEN_HOST_ROOT=/host \
  -v /proc:/host/proc:ro \
  -v /run/portwarden:/run/portwarden \
  -v /var/lib/portwarden:/var/lib/portwarden \
  -e PORTWARDEN_LOCK_FILE=/run/portwarden/agent.lock \
  "$image" run
