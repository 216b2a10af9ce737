# Scorer image: runs the hidden gates against a snapshot, as a non-root user, network disabled.
# The base image already carries python3, python3-pytest and python3-pytest-timeout;
# marathon_parallel (+ its pytest plugin marathon_claim) runs the checks in N pytest
# processes sharing one queue.
FROM {base}
RUN useradd --uid 1000 --create-home --shell /bin/sh scorer \
 && mkdir -p /opt/marathon /snapshot /report \
 && chown scorer:scorer /report
COPY pytest.ini /opt/marathon/pytest.ini
COPY marathon_parallel.py marathon_claim.py /usr/lib/python3/dist-packages/
USER 1000:1000
WORKDIR /report
