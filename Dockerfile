# syntax=docker/dockerfile:1
# One image for every jobferry process: `jobferry worker`, `jobferry beat`, `jobferry flower`
# (and the CLI). Build: docker build -t jobferry:0.1.0 .
#
# The base is pinned to an exact Python patch release on Debian bookworm; both stages use the
# same one, so the virtualenv built in the first runs unchanged in the second.

FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scheduler/ scheduler/
COPY workers/ workers/
# jobferry itself is pure Python. Its dependencies are installed from binary wheels only, so
# no compiler is needed in either stage, and a dependency that would need one fails the build
# here instead of growing the image.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/jobferry \
    && /opt/jobferry/bin/pip install --only-binary=:all: /wheels/jobferry-*.whl

FROM python:3.11.14-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="jobferry" \
      org.opencontainers.image.description="Run long, heavy work as Kubernetes Jobs from a Celery task queue on Redis." \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid: Kubernetes' runAsNonRoot can only verify a numeric USER.
# /var/lib/jobferry is the user's own, so a volume mounted there (docker-compose.yml keeps the
# local backend's state in one) starts out writable by it.
RUN groupadd --system --gid 10001 jobferry \
    && useradd --system --uid 10001 --gid jobferry --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin jobferry \
    && install -d -o jobferry -g jobferry -m 0750 /var/lib/jobferry
COPY --from=builder /opt/jobferry /opt/jobferry
# Bytecode was compiled at install time; nothing is written at run time, so the root
# filesystem can be read-only. HOME points at /tmp, the one writable place (an emptyDir in k8s/).
ENV PATH=/opt/jobferry/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
# Flower's port (`jobferry flower`); workers and beat listen on nothing.
EXPOSE 5555
ENTRYPOINT ["jobferry"]
CMD ["--help"]
