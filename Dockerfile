# One image for every Python role: the three services (uvicorn), workers and
# Flower (celery), the migration and key jobs (questline). docker-compose.yml
# picks the role with `command:`. Alone it runs the embedded default:
#   docker build -t questline . && docker run -p 8000:8000 -v questline-data:/data questline
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUESTLINE_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY api ./api
COPY workers ./workers
COPY models ./models
COPY questline ./questline
COPY rpc ./rpc
COPY migrations ./migrations
RUN pip install . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin questline \
    && mkdir -p /data /keys/private /keys/public \
    && chown questline /data /keys/private /keys/public

# Not root: Celery refuses to run as root by default, and nothing here needs it.
USER questline
VOLUME ["/data"]
EXPOSE 8000
CMD ["questline", "serve", "--host", "0.0.0.0", "--port", "8000"]
