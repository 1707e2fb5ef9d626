# Portwarden's container image: the agent (glibc build) and the standalone
# `fluent-launch`, with exactly the shared libraries they load, on scratch.
# No Suricata in this variant: detection needs a Suricata image beside it
# (`--suricata external`) or a host install.
#
# Build with scripts/build-image.sh: it compiles on the host (no registry is
# reachable here, so there is no Rust builder image to pull) and gathers the
# root filesystem into the build context's `rootfs/`; the first stage takes it,
# the second flattens it into one small layer.
FROM scratch AS rootfs
COPY rootfs/ /

FROM scratch
COPY --from=rootfs / /
# The seed mounts the host's /proc here; the agent looks for it by default.
ENV PORTWARDEN_PROC_ROOT=/host/proc
# A Fluent Bit sidecar mounts this (volumes-from) and runs fluent-launch.
VOLUME ["/opt/portwarden/fluent-bit"]
ENTRYPOINT ["/usr/bin/portwarden"]
CMD ["run"]
