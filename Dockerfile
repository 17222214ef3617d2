# sidecache: the caching sidecar. Build: docker build -t sidecache .
# Run:   docker run -p 8080:8080 -v $PWD/config:/etc/sidecache:ro sidecache
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SIDECACHE_CONFIG=/etc/sidecache/sidecache.yaml

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install . && useradd --system --uid 10001 --no-create-home sidecache
COPY config/sidecache.yaml /etc/sidecache/sidecache.yaml

USER sidecache
# 8080: public port. The control port binds 127.0.0.1 by default; publish it
# only after setting control.listen and a token (see README, Operations).
EXPOSE 8080
ENTRYPOINT ["sidecache"]
CMD ["serve"]
