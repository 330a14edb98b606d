"""The serving frontend: HTTP + gRPC ranking on ONNX Runtime, model registry with hot swap, sampling."""
