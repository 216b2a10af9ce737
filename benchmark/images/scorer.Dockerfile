# Scorer image: runs the hidden gates against a snapshot, as a non-root user, network disabled.
# The base image already carries python3, python3-pytest, python3-pytest-timeout and
# python3-pytest-xdist (checks run in 2 worker processes).
FROM {base}
RUN useradd --uid 1000 --create-home --shell /bin/sh scorer \
 && mkdir -p /opt/marathon /snapshot /report \
 && chown scorer:scorer /report
COPY pytest.ini /opt/marathon/pytest.ini
USER 1000:1000
WORKDIR /report
