# Graph Safety Gateway image. Build: docker build -t graph-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . \
    && useradd --system --create-home --uid 10001 gateway \
    && chown -R gateway /app

USER gateway
# 8080: proxy (or the simulator for now); 9090: admin API and /metrics.
EXPOSE 8080 9090

ENTRYPOINT ["graph-gateway"]
# For now the image runs the bundled Graph simulator. When `graph-gateway serve` lands this
# becomes ["serve", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090"]
# (the admin port needs GATEWAY_ADMIN_TOKEN when bound off loopback).
CMD ["sim", "--host", "0.0.0.0", "--port", "8080"]
