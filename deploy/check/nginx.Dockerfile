# A local stand-in for the public nginx image, for a machine that reaches no image registry
# (`make deploy-check`): Debian's nginx-light (1.22: upstreams, grpc_pass, http2), in the foreground.
# Elsewhere, use the public image.
ARG BASE=localhost/recdistill-base:bookworm
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends nginx-light && rm -rf /var/lib/apt/lists/*
EXPOSE 8080 50051
CMD ["nginx", "-g", "daemon off;"]
