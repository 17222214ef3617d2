# sidecache: the caching sidecar. Build: docker build -t sidecache .
# Run:   docker run -p 8080:8080 -v $PWD/config:/etc/sidecache:ro sidecache
# With the demo app (its SQLAlchemy, drivers and Pillow; not needed by the proxy):
#        docker build --build-arg EXTRAS=[demo] -t sidecache-demo .
# Beside an app: deploy/docker-compose.yaml and deploy/kubernetes/ (README,
# "Deploying beside your app").
FROM python:3.11.10-slim-bookworm

LABEL org.opencontainers.image.title="sidecache" \
      org.opencontainers.image.description="A caching reverse proxy that runs as a sidecar beside a web application" \
      io.sidecache.config="/etc/sidecache/sidecache.yaml (SIDECACHE_CONFIG)" \
      io.sidecache.port.public="8080" \
      io.sidecache.port.control="9090 (127.0.0.1 unless control.listen and control.token are set)" \
      io.sidecache.data="/data (the demo app's database; XDG_CACHE_HOME)"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SIDECACHE_CONFIG=/etc/sidecache/sidecache.yaml \
    XDG_CACHE_HOME=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
ARG EXTRAS=""
RUN pip install ".${EXTRAS}" && useradd --system --uid 10001 --no-create-home sidecache
RUN mkdir -p /data && chown sidecache:sidecache /data
COPY config/sidecache.yaml /etc/sidecache/sidecache.yaml

USER sidecache
# Writable data directory: `sidecache upstream`/`demo` keep their SQLite file
# under $XDG_CACHE_HOME/sidecache (the user has no home).
VOLUME ["/data"]
# 8080: public port. The control port binds 127.0.0.1 by default; publish it
# only after setting control.listen and a token (see README, Operations).
EXPOSE 8080 9090
# The control port answers /healthz on 127.0.0.1 whatever its listen address.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
# sidecache is PID 1: SIGTERM drains (server.shutdown_grace) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["sidecache"]
CMD ["serve"]
