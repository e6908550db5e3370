# One image for the driftwatch worker, dashboard and demo.
#   docker build -t driftwatch .
#   docker run --rm driftwatch driftwatch --help
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: only pyproject.toml invalidates it. The image runs the
# worker, the dashboard and the demo: the [worker] and [dashboard] extras. Not [alibi]
# (alibi-detect is BSL-licensed): build with --build-arg DW_EXTRAS=worker,dashboard,alibi
# (compose and .env: DW_EXTRAS) for monitors with drift.engine: alibi.
ARG DW_EXTRAS=worker,dashboard
COPY pyproject.toml README.md ./
RUN mkdir -p streams detectors dashboard \
    && touch streams/__init__.py detectors/__init__.py dashboard/__init__.py \
    && pip install ".[${DW_EXTRAS}]" \
    && pip uninstall -y driftwatch

# The project itself.
COPY streams ./streams
COPY detectors ./detectors
COPY dashboard ./dashboard
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/driftwatch --create-home driftwatch

USER driftwatch
ENV DRIFTWATCH_STATE_DIR=/var/lib/driftwatch
EXPOSE 8501 6066
CMD ["driftwatch", "worker"]
