# JollyJet engine image: Debian 12, Debian packages only, non-root.
FROM debian:12-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config liblua5.4-dev libhiredis-dev libev-dev libsqlite3-dev libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY engine engine
COPY lua lua
COPY policies policies
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJJ_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/opt/jollyjet \
    && cmake --build build -j"$(nproc)" --target jollyjet \
    && cmake --install build

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      lua5.4 liblua5.4-0 libhiredis0.14 libev4 libsqlite3-0 libpq5 lua-cjson curl ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/jollyjet --create-home jollyjet
COPY --from=build /opt/jollyjet /opt/jollyjet
USER jollyjet
WORKDIR /var/lib/jollyjet
ENV PORT=8080 \
    LUA_DIR=/opt/jollyjet/share/jollyjet/lua \
    POLICY_DIR=/opt/jollyjet/share/jollyjet/policies \
    MIGRATIONS_DIR=/opt/jollyjet/share/jollyjet/migrations \
    DB_PATH=/var/lib/jollyjet/jollyjet.db \
    PID_FILE=/var/lib/jollyjet/jollyjet.pid
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["/opt/jollyjet/bin/jollyjet"]
CMD ["serve"]
