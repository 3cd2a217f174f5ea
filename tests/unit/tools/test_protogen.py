"""The reconstructed buf/validate/validate.proto must compile back to the
exact descriptor protovalidate ships (names, numbers, labels, options)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2, text_format

from tools import protogen

BUF = Path(sys.executable).parent / "buf"


def _shipped_descriptor() -> descriptor_pb2.FileDescriptorProto:
    validate_py = protogen._package_dir("protovalidate") / "_gen" / "buf" / "validate" / "validate_pb.py"
    return descriptor_pb2.FileDescriptorProto.FromString(protogen._embedded_descriptor(validate_py))


def _strip(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """Drop what a compiler fills in on its own (json names, source info)."""
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    fd.ClearField("source_code_info")

    def walk(msg: descriptor_pb2.DescriptorProto) -> None:
        for field in msg.field:
            field.ClearField("json_name")
        for nested in msg.nested_type:
            walk(nested)

    for msg in fd.message_type:
        walk(msg)
    for ext in fd.extension:
        ext.ClearField("json_name")
    return fd


def _text(fd: descriptor_pb2.FileDescriptorProto) -> str:
    return text_format.MessageToString(_strip(fd), print_unknown_fields=True)


def test_reconstructed_validate_proto_compiles_to_the_shipped_descriptor(tmp_path: Path) -> None:
    module = protogen.stage_third_party(tmp_path / "third_party")
    (tmp_path / "buf.yaml").write_text("version: v2\nmodules:\n  - path: third_party\n")
    image = tmp_path / "image.binpb"
    subprocess.run(
        [str(BUF), "build", "--as-file-descriptor-set", "--path", str(module / "buf"), "-o", str(image)],
        cwd=tmp_path,
        check=True,
    )
    files = {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file}
    rebuilt = files["buf/validate/validate.proto"]
    shipped = _shipped_descriptor()
    # Compared as text (custom options included as unknown fields): the byte
    # order of options may legitimately differ between compilers.
    assert _text(rebuilt) == _text(shipped)


def test_staging_is_idempotent(tmp_path: Path) -> None:
    first = protogen.stage_third_party(tmp_path)
    before = {p: p.read_bytes() for p in first.rglob("*.proto")}
    protogen.stage_third_party(tmp_path)
    assert {p: p.read_bytes() for p in first.rglob("*.proto")} == before
    assert (tmp_path / "google" / "api" / "annotations.proto").exists()
