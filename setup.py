"""Build hook: compile protos/ into the package before it is built.

Generated code is never committed or hand-edited. `protos/cvscore/**/*.proto` become
importable modules under `cvscore/` (with `.pyi` stubs), and every proto in `protos/`
is also written to one descriptor set, `cvscore/protos.pb`, which the server loads into
a private descriptor pool (see server/kserve.py for why).
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def compile_protos() -> None:
    import grpc_tools
    from grpc_tools import protoc

    proto_dir = ROOT / "protos"
    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    ours = sorted(
        p.relative_to(proto_dir).as_posix() for p in (proto_dir / "cvscore").rglob("*.proto")
    )
    every = sorted(p.relative_to(proto_dir).as_posix() for p in proto_dir.rglob("*.proto"))
    out = ROOT  # protos/cvscore/v1/x.proto -> ./cvscore/v1/x_pb2.py
    args = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *ours,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {ours}")
    desc = [
        "protoc",
        f"-I{proto_dir}",
        f"-I{include}",
        "--include_imports",
        f"--descriptor_set_out={ROOT / 'cvscore' / 'protos.pb'}",
        *every,
    ]
    if protoc.main(desc) != 0:
        raise RuntimeError(f"protoc failed on {every}")
    for pkg in {(out / p).parent for p in ours}:
        (pkg / "__init__.py").touch()


class BuildWithProtos(build_py):
    def run(self) -> None:
        compile_protos()
        super().run()


# setuptools checks that every listed package directory exists before any command runs,
# so the generated `cvscore.v1` must be there already when setup() is called.
compile_protos()
setup(cmdclass={"build_py": BuildWithProtos})
