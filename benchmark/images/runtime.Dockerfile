# Runtime layer of one marathon, on the scorer or the agent image ({base}): the Debian packages
# and the exact Node.js its marathon.toml declares under [runtime]. Built with host networking
# to reach the package registries; containers started from it have no network.
FROM {base}
USER root
# build-ca.crt is the build host's CA bundle (for registries behind a TLS-inspecting proxy); it
# is used by this build only.
COPY build-ca.crt install_node.py /tmp/marathon-build/
RUN {apt_step}
RUN {node_step}
RUN rm -rf /tmp/marathon-build
USER {user}
WORKDIR {workdir}
