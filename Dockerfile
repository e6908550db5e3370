# One image for the driftwatch worker, dashboard and demo.
#   docker build -t driftwatch .
#   docker run --rm driftwatch driftwatch --help
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies in their own layer: only pyproject.toml invalidates it.
COPY pyproject.toml README.md ./
RUN mkdir -p streams detectors dashboard benchmarks \
    && touch streams/__init__.py detectors/__init__.py dashboard/__init__.py benchmarks/__init__.py \
    && pip install . \
    && pip uninstall -y driftwatch

# The project itself.
COPY streams ./streams
COPY detectors ./detectors
COPY dashboard ./dashboard
COPY benchmarks ./benchmarks
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /var/lib/driftwatch --create-home driftwatch

USER driftwatch
ENV DRIFTWATCH_STATE_DIR=/var/lib/driftwatch
EXPOSE 8501 6066
CMD ["driftwatch", "worker"]
