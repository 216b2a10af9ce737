# Agent image: one container per trial; Node and npm (for agent CLIs), socat, a non-root user,
# /workspace as a git repository. Each declared agent (agents/NAME.toml) gets an image derived
# from this one with its pinned packages (benchmark.images.build_agent_image). Containers started
# from it have no network: socat forwards 127.0.0.1:<port> in the container to the metering
# proxy's Unix socket, bind-mounted at /run/marathon.
FROM {base}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm socat \
 && rm -rf /var/lib/apt/lists/*
# marathon-check: a self-check of the workspace through the trial's proxy socket (docs/arms.md)
COPY marathon_check.py /usr/local/bin/marathon-check
RUN chmod 0755 /usr/local/bin/marathon-check
RUN useradd --uid 1000 --create-home --shell /bin/bash agent \
 && mkdir -p /workspace && chown agent:agent /workspace
ENV DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 IS_SANDBOX=1
USER 1000:1000
WORKDIR /workspace
RUN git config --global user.email agent@marathon.invalid \
 && git config --global user.name "marathon agent" \
 && git config --global init.defaultBranch main
