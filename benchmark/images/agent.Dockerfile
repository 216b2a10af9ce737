# Agent image: one container per trial; the agent CLIs at exact versions, a non-root user,
# /workspace as a git repository. Built with host networking to reach the package registries;
# containers started from it have no network: socat forwards 127.0.0.1:<port> in the container
# to the metering proxy's Unix socket, bind-mounted at /run/marathon.
FROM {base}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm socat \
 && rm -rf /var/lib/apt/lists/*
# build-ca.crt is the build host's CA bundle (for registries behind a TLS-inspecting proxy); it
# is used for this step only and not kept in the image.
COPY build-ca.crt /tmp/build-ca.crt
RUN npm install -g --no-fund --no-audit --cafile=/tmp/build-ca.crt \
      @anthropic-ai/claude-code@{claude_code_version} \
      @openai/codex@{codex_version} \
 && npm cache clean --force && rm /tmp/build-ca.crt
RUN useradd --uid 1000 --create-home --shell /bin/bash agent \
 && mkdir -p /workspace && chown agent:agent /workspace
ENV DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 IS_SANDBOX=1
USER 1000:1000
WORKDIR /workspace
RUN git config --global user.email agent@marathon.invalid \
 && git config --global user.name "marathon agent" \
 && git config --global init.defaultBranch main
