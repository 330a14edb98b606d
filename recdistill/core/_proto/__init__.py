"""gRPC stubs generated from `protos/*.proto` at install time (see setup.py); not hand-written."""
