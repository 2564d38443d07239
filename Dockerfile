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

USER aggregator
VOLUME /app/data

ENTRYPOINT ["aggregator"]
CMD ["run"]
