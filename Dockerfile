# One image for all eleven services and the gateway; docker-compose.yml and the
# Helm chart (deploy/helm/trading) pick the entry point per container
# (`python -m services.<name>` / `python -m gateway`).
#
# What is in it: the platform's runtime dependencies (pyproject.toml
# [project.dependencies] and the generated contracts' own), pinned by
# constraints.txt, and the source. What is not: the `dev` extra (tests, linters,
# toolchains) and the `local-servers` extra (tansu, nats-server, embedded
# PostgreSQL, SeaweedFS): a deployment points the services at real servers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# 1. Third-party dependencies first, from the package metadata only: this layer
#    is rebuilt when pyproject.toml or constraints.txt change, not when the
#    source does. The requirement list is the [project.dependencies] of both
#    packages (no extras), every version pinned by constraints.txt.
COPY constraints.txt pyproject.toml ./
COPY gen/python/pyproject.toml ./gen/python/pyproject.toml
RUN python -c "import tomllib; \
deps = [d for f in ('pyproject.toml', 'gen/python/pyproject.toml') \
        for d in tomllib.load(open(f, 'rb'))['project'].get('dependencies', [])]; \
open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. The source, installed without resolving anything again (--no-deps): the
#    platform package (tradingctl on PATH) and the generated contracts.
COPY gen/python ./gen/python
COPY runtime ./runtime
COPY domain ./domain
COPY services ./services
COPY gateway ./gateway
COPY tools ./tools
COPY proto ./proto
RUN pip install --no-deps -c constraints.txt -e . -e gen/python

# Local state (chdb files, models) when a service uses the embedded defaults.
# /secrets, /admin and /config: mount points of docker-compose.yml's credential
# volumes; a new named volume takes its owner and mode from here, so the init
# job (running as this user) can write them, and /config stays traversable for
# Dragonfly, which reads its ACL file as its own user. Kubernetes runs the same
# user (runAsNonRoot, runAsUser 10001 in the chart).
RUN useradd --system --uid 10001 --home-dir /app trading \
    && mkdir -p /app/var /secrets /admin /config \
    && chown trading /app/var /secrets /admin /config \
    && chmod 0755 /secrets /config && chmod 0700 /admin
USER 10001

ENV TRADING_HOST=0.0.0.0 \
    TRADING_VAR_DIR=/app/var

CMD ["tradingctl", "--help"]
