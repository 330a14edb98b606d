"""Generates the gRPC stubs from protos/ into recdistill/core/_proto at build / install time."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent


def generate_stubs() -> None:
    from grpc_tools import protoc

    out = ROOT / "recdistill" / "core" / "_proto"
    for proto in sorted((ROOT / "protos").glob("*.proto")):
        args = ["protoc", f"-I{ROOT / 'protos'}", f"--python_out={out}", f"--pyi_out={out}",
                f"--grpc_python_out={out}", str(proto)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto}")
        # protoc writes absolute imports; make them package-relative.
        grpc_module = out / f"{proto.stem}_pb2_grpc.py"
        text = grpc_module.read_text()
        grpc_module.write_text(text.replace(f"import {proto.stem}_pb2", f"from . import {proto.stem}_pb2"))


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
