# Portwarden's container image: the agent (glibc build), the standalone
# `fluent-launch` and, unless built --minimal, Suricata 7 with its default
# config, each with exactly the shared libraries it loads, on scratch.
# Detection is on with the built-in rules; mount a directory of *.rules at
# /etc/portwarden/rules (a ConfigMap) to add rules.
#
# Build with scripts/build-image.sh: it compiles on the host (no registry is
# reachable here, so there is no Rust builder image to pull) and gathers the
# root filesystem into the build context's `rootfs/`; the first stage takes it,
# the second flattens it into one small layer.
FROM scratch AS rootfs
COPY rootfs/ /

FROM scratch
COPY --from=rootfs / /
ENV PATH=/usr/bin
# The seed mounts the host's /proc here; the agent looks for it by default.
ENV PORTWARDEN_PROC_ROOT=/host/proc
# A Fluent Bit sidecar mounts this (volumes-from) and runs fluent-launch.
VOLUME ["/opt/portwarden/fluent-bit"]
ENTRYPOINT ["/usr/bin/portwarden"]
CMD ["run"]
