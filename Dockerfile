# Graph Safety Gateway image. Build: docker build -t graph-gateway .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir . \
    && useradd --system --create-home --uid 10001 gateway \
    && mkdir /data && chown -R gateway /app /data

USER gateway
# The ledger lives on a volume; production points GATEWAY_DATABASE_URL at PostgreSQL instead.
VOLUME /data
ENV GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_ADMIN_LISTEN=0.0.0.0:9090 \
    GATEWAY_DATABASE_URL=sqlite:////data/gateway.db
# 8080: proxy (the backend's Graph base URL); 9090: admin API and /metrics.
EXPOSE 8080 9090

ENTRYPOINT ["graph-gateway"]
# The admin port is off loopback here, so the gateway refuses to start without
# a GATEWAY_ADMIN_TOKEN of 16+ characters: docker run -e GATEWAY_ADMIN_TOKEN="$(openssl rand -hex 32)" -v gw:/data graph-gateway
# The simulator: docker run graph-gateway sim --host 0.0.0.0 --port 8080
CMD ["serve"]
