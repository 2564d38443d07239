# aggregator: feed ingester and aggregator daemon.
#
#   docker build -t aggregator .
#   docker run -d --name aggregator -v aggregator-data:/app/data aggregator
#   docker run --rm -v aggregator-data:/app/data aggregator feeds list
#
# The config that ships is /app/config/feeds.yaml; mount your own over it
# (-v ./feeds.yaml:/app/config/feeds.yaml:ro) or point AGGREGATOR_CONFIG elsewhere.
# The default database is SQLite at /app/data/aggregator.db (the volume); set
# AGGREGATOR_DATABASE_URL=postgresql://user:password@host/db to use PostgreSQL.
# `docker stop` sends SIGTERM: the daemon stops within its 10 s grace period.
#
# Health: with `settings.http` in the config (e.g. `http: {host: 0.0.0.0, port: 8080}`)
# the daemon serves /healthz, and the HEALTHCHECK below asks it (200: a feed was polled
# successfully within settings.health_max_age). Without settings.http there is nothing
# to ask and the check passes while the process runs.
#
# Check a change to this file locally, without a Docker engine: bash scripts/image-check.sh

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Build from the project's own files only (see .dockerignore); the migrations are
# packaged into the wheel (aggregator/_migrations), so the source tree is not kept.
COPY pyproject.toml README.md /tmp/build/
COPY src/ /tmp/build/src/
COPY migrations/ /tmp/build/migrations/
RUN pip install '/tmp/build[postgres]' \
    && rm -rf /tmp/build

RUN groupadd --system aggregator \
    && useradd --system --gid aggregator --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin aggregator \
    && mkdir -p /app/data \
    && chown aggregator:aggregator /app/data

WORKDIR /app
COPY --chown=aggregator:aggregator config/ /app/config/
COPY scripts/healthcheck.py /app/healthcheck.py

USER aggregator
VOLUME /app/data
# The port of settings.http when it is on (nothing listens otherwise).
EXPOSE 8080

# Standard library only (no curl in the image); reads settings.http like `aggregator run`.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 \
    CMD ["python", "/app/healthcheck.py"]

ENTRYPOINT ["aggregator"]
CMD ["run"]
