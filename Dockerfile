# Firelake's services (ingest, router, sinks, tools) in one image. Kafka runs in its own
# container (apache/kafka), so no Java here. Build: docker build -t firelake .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Metadata first, then the packages: pyproject declares README.md as the readme, so the
# build needs it.
COPY pyproject.toml README.md ./
COPY firelake ./firelake
COPY streams ./streams
COPY agents ./agents
COPY sinks ./sinks
COPY queries ./queries
COPY api ./api
COPY cases ./cases
RUN pip install . && rm -rf /src

# The shipped Yle example is the container's configuration. Its ingest binds 127.0.0.1,
# which a published port cannot reach inside a container: bind every interface instead,
# and fail the build if the example's line ever changes so the edit no longer applies.
WORKDIR /app
COPY firelake/examples/yle/firelake.toml /app/firelake.toml
# Its saved queries, where the config's [query] saved_dir ("queries") points.
COPY firelake/examples/yle/queries /app/queries
RUN sed -i 's/^host = "127.0.0.1"/host = "0.0.0.0"/' /app/firelake.toml \
    && grep -q '^host = "0.0.0.0"' /app/firelake.toml

# Unprivileged user; /lake is created here so a named volume mounted there inherits its owner.
RUN useradd --create-home --uid 10001 firelake \
    && mkdir -p /lake \
    && chown firelake:firelake /lake /app
USER firelake

ENV FIRELAKE_LAKE=/lake
EXPOSE 4566
CMD ["firelake", "--help"]
