# Scorer image: runs the hidden gates against a snapshot, network disabled. The runner (pytest)
# runs as uid 0 with a handful of capabilities (set by the scorer when it creates the container)
# and runs the product as an unprivileged uid (marathon_product), which cannot enter /scorer:
# the gates (a copy per pytest process, erased once collected), the seed and the reports are
# mounted there.
# The base image already carries python3, python3-pytest and python3-pytest-timeout;
# marathon_parallel (+ its pytest plugin marathon_claim) runs the checks in N pytest
# processes sharing one queue.
FROM {base}
RUN mkdir -p /opt/marathon /snapshot /scorer/runner /scorer/report \
 && chmod 0700 /scorer
COPY pytest.ini /opt/marathon/pytest.ini
COPY marathon_parallel.py marathon_claim.py marathon_product.py /usr/lib/python3/dist-packages/
WORKDIR /scorer
