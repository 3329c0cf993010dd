# hepgg_server: `serve` against external MongoDB and Redis from the environment, e.g.
#   docker run -e HEPGG_MONGO_URI=mongodb://mongo:27017/?replicaSet=rs0 -e HEPGG_REDIS_URL=redis://redis:6379/0 hepgg
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md hepgg_server.py ./
COPY common common
COPY handlers handlers
COPY store store
COPY render render
COPY runtime runtime
COPY og og
COPY music music
COPY contact contact
COPY presence presence
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

FROM python:3.11-slim-bookworm
# Debian's stable security updates are wanted here, so packages are not pinned to a version.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libmagickwand-6.q16-6 fonts-dejavu-core fonts-noto-cjk fonts-noto-color-emoji \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin hepgg
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
# The source tree too: templates/ and static/ are found next to hepgg_server.py.
COPY --from=build /src /app
COPY templates templates
COPY static static
USER 10001
ENV HEPGG_ADDRESS=0.0.0.0 \
    HEPGG_PORT=8888 \
    HEPGG_PROCESSES=0 \
    PYTHONUNBUFFERED=1
EXPOSE 8888
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8888/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "hepgg_server.py"]
CMD ["serve"]
