# ktls-sidecar container image.
#
#   docker build -t ktls-sidecar:0.1.0 .        (or: podman build -t ktls-sidecar:0.1.0 .)
#
# Runtime contract (see docs/deploy.md):
# - runs as the numeric non-root user 65532:65532; needs no capabilities. kTLS itself needs none:
#   setsockopt(TCP_ULP, "tls") and SOL_TLS work for any socket owner. Loading the `tls` kernel module is
#   the node's job (modules-load.d, or the chart's optional nodeSetup DaemonSet), never this container's.
# - works with a read-only root filesystem: it writes nothing (the chart still mounts an emptyDir on /tmp).
# - no HEALTHCHECK: Kubernetes probes the admin endpoints (/healthz, /readyz on 9901) instead.
#
# NODE_IMAGE names the upstream Node image: 24, the LTS line package.json's engines and CI test
# (Node 20 reached end of life on 2026-04-30). Pin it by digest for reproducible builds:
#   --build-arg NODE_IMAGE=docker.io/library/node:24-bookworm-slim@sha256:...
ARG NODE_IMAGE=docker.io/library/node:24-bookworm-slim

# ---------------------------------------------------------------------------------------------------
# Build stage: compile the native addon and the TypeScript. Ordered by how often things change, so a
# source edit rebuilds only the last step: dependencies (lockfile) < native addon < TypeScript.
FROM ${NODE_IMAGE} AS build

# node-gyp needs python3, make and a C++ compiler; only this stage has them.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

# The upstream image ships Node's headers in /usr/local/include/node; without nodedir node-gyp would
# download them from nodejs.org.
ENV npm_config_nodedir=/usr/local \
    npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false

WORKDIR /src

# --ignore-scripts: our own `prepare` (tsc) and `install` (native build) need sources that are not
# copied yet, and no dependency needs an install script here (the `node` devDependency's would
# download a second Node 24; this image's own is used instead).
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret (it never lands in a layer):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt .
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle; fi \
 && npm ci --ignore-scripts

# native/build.mjs never fails (the sidecar falls back to userspace TLS without the addon), so the
# image build checks that the addon exists: an image without it could never use kTLS.
COPY native/binding.gyp native/build.mjs ./native/
COPY native/src ./native/src
RUN node native/build.mjs \
 && test -f native/build/Release/ktls_native.node

# native/index.ts (the addon's TypeScript loader) is compiled with the rest. .dockerignore keeps any
# host native/build out, so this copy cannot overwrite the addon built above.
COPY tsconfig.json tsconfig.build.json ./
COPY native ./native
COPY proxy ./proxy
COPY config ./config
RUN npm run build \
 && chmod 0755 dist/proxy/cli.js

# ---------------------------------------------------------------------------------------------------
# Production dependencies only, installed from the lockfile (no dev dependencies, no compiler).
FROM ${NODE_IMAGE} AS prod-deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --no-update-notifier

# ---------------------------------------------------------------------------------------------------
# Runtime stage: Node 24 slim, the compiled sidecar, production dependencies only.
FROM ${NODE_IMAGE} AS runtime
# Re-declared so that the base.name label names the base actually used (a --build-arg override too).
ARG NODE_IMAGE

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ktls-sidecar" \
      org.opencontainers.image.description="TLS-terminating reverse-proxy sidecar that hands the record layer to Linux kernel TLS (kTLS)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${NODE_IMAGE}"

ENV NODE_ENV=production

# The sidecar never runs npm: remove the package managers the base image ships. Put the CLI on PATH
# for ENTRYPOINT and `kubectl exec ... ktls-sidecar doctor` (the link resolves once dist/ is copied).
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /opt/yarn* /usr/local/bin/yarn /usr/local/bin/yarnpkg \
 && ln -s /app/dist/proxy/cli.js /usr/local/bin/ktls-sidecar

WORKDIR /app
COPY --from=build /src/package.json ./package.json
COPY --from=prod-deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/config ./config
COPY --from=build /src/native/binding.gyp ./native/binding.gyp
COPY --from=build /src/native/build/Release/ktls_native.node ./native/build/Release/ktls_native.node

USER 65532:65532
EXPOSE 8443 9901
ENTRYPOINT ["ktls-sidecar"]
