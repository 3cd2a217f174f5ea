# One image for all eleven services and the gateway; docker-compose.yml picks
# the entry point per container (`python -m services.<name>` / `python -m gateway`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# Dependencies first (cached while only source changes): the pinned set and
# the package metadata pip needs to resolve them.
COPY constraints.txt pyproject.toml ./
COPY gen/python ./gen/python
COPY runtime ./runtime
COPY domain ./domain
COPY services ./services
COPY gateway ./gateway
COPY tools ./tools
COPY proto ./proto
RUN pip install -c constraints.txt -e . -e gen/python

# Local state (chdb files, models) when a service uses the embedded defaults.
# /secrets, /admin and /config: mount points of docker-compose.yml's credential
# volumes; a new named volume takes its owner and mode from here, so the init
# job (running as this user) can write them, and /config stays traversable for
# Dragonfly, which reads its ACL file as its own user.
RUN useradd --system --uid 10001 --home-dir /app trading \
    && mkdir -p /app/var /secrets /admin /config \
    && chown trading /app/var /secrets /admin /config \
    && chmod 0755 /secrets /config && chmod 0700 /admin
USER trading

ENV TRADING_HOST=0.0.0.0 \
    TRADING_VAR_DIR=/app/var

CMD ["tradingctl", "--help"]
