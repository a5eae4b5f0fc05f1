# aggregator — container image: the daemon (`aggregator run`) polling the configured portals
# and serving the generated feeds, /healthz and /metrics on port 8080.
#
#   docker build -t aggregator .
#   docker run --init -p 8080:8080 -v aggregator-data:/data \
#       -v "$PWD/config/docker.yaml:/config/aggregator.yaml:ro" aggregator
#
# or simply `docker compose up -d` (docker-compose.yml).  The config is read from
# /config/aggregator.yaml; the database and the generated feeds live in the /data volume
# (config/docker.yaml points database_url and output_dir there with absolute paths).

# --- build stage: install the project and its dependencies into a virtualenv ----------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

WORKDIR /src
# Only what the package build needs (see .dockerignore); README.md is the package readme.
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
# Regular (non-editable) install, with the PostgreSQL driver (psycopg) from the extra.
RUN pip install ".[postgres]"

# --- runtime stage ---------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH="/opt/venv/bin:$PATH" \
    AGGREGATOR_CONFIG=/config/aggregator.yaml

# Unprivileged user; /data belongs to it so a fresh named volume (initialised from the
# image's /data) is writable.  /config is only read.
RUN groupadd --system --gid 10001 aggregator \
    && useradd --system --uid 10001 --gid aggregator --home-dir /srv/aggregator \
       --no-create-home --shell /usr/sbin/nologin aggregator \
    && mkdir -p /srv/aggregator /data/public /config \
    && chown -R aggregator:aggregator /srv/aggregator /data

COPY --from=build /opt/venv /opt/venv
# A default config so the image runs on its own; compose mounts the operator's over it.
COPY config/docker.yaml /config/aggregator.yaml

WORKDIR /srv/aggregator
USER aggregator:aggregator
VOLUME ["/data"]
EXPOSE 8080

# No curl in the slim image: Python's urllib.  A 503 (down) raises HTTPError -> exit 1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# The daemon stops cleanly on SIGTERM and rereads its config on SIGHUP
# (`docker kill -s HUP <container>`); run with --init (compose: `init: true`) so a
# minimal init reaps children and forwards the signals.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aggregator"]
CMD ["run", "--config", "/config/aggregator.yaml", "--host", "0.0.0.0", "--port", "8080"]
