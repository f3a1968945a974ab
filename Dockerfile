# One image for every Firewatch service; docker-compose.yml picks the service by its command
# (firewatch gateway | ingest | alerts | web, or `up` for everything in one container).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# installed at the versions the test suite passed with (constraints.txt)
COPY pyproject.toml constraints.txt README.md ./
COPY firewatch ./firewatch
COPY gateway ./gateway
COPY ingest ./ingest
COPY alerts ./alerts
COPY simulators ./simulators
COPY device_profiles ./device_profiles
COPY sites ./sites
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin firewatch \
    && mkdir -p /data \
    && chown firewatch:firewatch /data

USER firewatch
ENV FIREWATCH_DATA_DIR=/data \
    FIREWATCH_HOST=0.0.0.0 \
    FIREWATCH_LOG_FORMAT=json
VOLUME /data
# web app and API; Prometheus metrics of a service run on its own
EXPOSE 8000 9464
ENTRYPOINT ["firewatch"]
CMD ["up"]
