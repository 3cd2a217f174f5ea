"""Contract toolchain: third-party proto staging and the local grpc plugin.

Third-party .proto files are not ours to commit, and buf cannot fetch remote
modules here, so `stage_third_party()` assembles them into the git-ignored
`build/third_party/` module from installed packages:

* `google/api/{annotations,http}.proto` and `google/rpc/{status,error_details}.proto`
  are copied from the googleapis-common-protos wheel, which ships them as sources.
* `buf/validate/validate.proto` ships in no reachable package as a source.
  The protovalidate wheel carries its compiled FileDescriptorProto, so we
  print the .proto back from that descriptor (`print_proto`). The result is
  semantically identical (same names, numbers, options) but has no comments.

`grpc_python_plugin()` is a protoc plugin (`protoc-gen-grpc_python`):
grpcio-tools bundles the grpc generator inside its protoc but ships no
standalone plugin executable, so this hands buf's CodeGeneratorRequest to the
bundled protoc through a descriptor set and returns the files it writes.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import (  # noqa: F401  (duration/field_mask/timestamp register their files)
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    field_mask_pb2,
    message_factory,
    text_encoding,
    text_format,
    timestamp_pb2,
)
from google.protobuf.compiler import plugin_pb2

ROOT = Path(__file__).resolve().parent.parent
THIRD_PARTY = ROOT / "build" / "third_party"

_GOOGLEAPIS_FILES = (
    "google/api/annotations.proto",
    "google/api/http.proto",
    # The rich error model (google.rpc.Status and its details), for the
    # TypeScript SDK's typed errors (clients/typescript-sdk/buf.gen.yaml).
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {module!r} is not installed; run ./dev to install dependencies")
    return Path(next(iter(spec.submodule_search_locations)))


def stage_third_party(dest: Path = THIRD_PARTY) -> Path:
    """Write the third-party proto module into `dest` (idempotent)."""
    google_dir = _package_dir("google.api").parent  # site-packages/google
    for rel in _GOOGLEAPIS_FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(google_dir.parent / rel, target)

    validate_py = _package_dir("protovalidate") / "_gen" / "buf" / "validate" / "validate_pb.py"
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(_embedded_descriptor(validate_py))
    target = dest / file_proto.name
    target.parent.mkdir(parents=True, exist_ok=True)
    text = print_proto(file_proto, source=f"protovalidate's compiled descriptor ({validate_py.name})")
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return dest


def _embedded_descriptor(module_file: Path) -> bytes:
    """The serialized FileDescriptorProto passed to `file_desc(...)` in a generated module."""
    tree = ast.parse(module_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "file_desc":
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise RuntimeError(f"no file_desc(...) descriptor found in {module_file}")


# --- descriptor -> .proto printer -------------------------------------------------

_SCALAR_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}
_MAX_FIELD_NUMBER = 536870911


class _OptionRenderer:
    """Decodes option messages (including custom-option extensions defined in the
    file being printed) and renders them in .proto option syntax."""

    def __init__(self, file_proto: descriptor_pb2.FileDescriptorProto) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        default = descriptor_pool.Default()
        for dep in file_proto.dependency:
            dep_proto = descriptor_pb2.FileDescriptorProto()
            default.FindFileByName(dep).CopyToProto(dep_proto)
            self.pool.Add(dep_proto)
        self.pool.Add(file_proto)

    def render(self, options: object) -> list[str]:
        """`name = value` entries of one options message (empty when unset)."""
        if options is None:
            return []
        full_name = options.DESCRIPTOR.full_name  # type: ignore[attr-defined]
        cls = message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))
        decoded = cls.FromString(options.SerializeToString())  # type: ignore[attr-defined]
        # Extensions are only decoded once the pool knows them; reparse with them registered.
        entries: list[str] = []
        for field, value in decoded.ListFields():
            name = f"({field.full_name})" if field.is_extension else field.name
            values = list(value) if field.is_repeated else [value]
            for item in values:
                entries.append(f"{name} = {self._value(field, item)}")
        return entries

    def _value(self, field: object, value: object) -> str:
        if getattr(field, "message_type", None) is not None:
            body = text_format.MessageToString(value, as_one_line=True)  # type: ignore[arg-type]
            return "{" + body + "}" if body else "{}"
        if getattr(field, "enum_type", None) is not None:
            return str(field.enum_type.values_by_number[value].name)  # type: ignore[attr-defined]
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + text_encoding.CEscape(value.encode(), as_utf8=True) + '"'
        return str(value)


def print_proto(file_proto: descriptor_pb2.FileDescriptorProto, *, source: str) -> str:
    """Render a proto2/proto3 FileDescriptorProto as .proto source."""
    renderer = _OptionRenderer(file_proto)
    out: list[str] = [
        f"// Reconstructed by tools/protogen.py from {source}.",
        "// Generated at build time; do not edit or commit.",
        f'syntax = "{file_proto.syntax or "proto2"}";',
        "",
        f"package {file_proto.package};",
        "",
    ]
    out += [f'import "{dep}";' for dep in file_proto.dependency]
    out.append("")
    out += [f"option {entry};" for entry in renderer.render(file_proto.options)]
    proto3 = file_proto.syntax == "proto3"
    for enum in file_proto.enum_type:
        out += _print_enum(enum, renderer, "")
    for message in file_proto.message_type:
        out += _print_message(message, renderer, "", proto3)
    for extension in file_proto.extension:
        out += [
            "",
            f"extend {extension.extendee.lstrip('.')} {{",
            "  " + _print_field(extension, renderer, proto3, in_oneof=False),
            "}",
        ]
    return "\n".join(out) + "\n"


def _print_enum(
    enum: descriptor_pb2.EnumDescriptorProto, renderer: _OptionRenderer, indent: str
) -> list[str]:
    lines = ["", f"{indent}enum {enum.name} {{"]
    lines += [f"{indent}  option {entry};" for entry in renderer.render(enum.options)]
    for value in enum.value:
        opts = renderer.render(value.options)
        suffix = f" [{', '.join(opts)}]" if opts else ""
        lines.append(f"{indent}  {value.name} = {value.number}{suffix};")
    # Enum reserved ranges are inclusive at both ends (message ones are not).
    lines += [f"{indent}  reserved {r.start} to {r.end};" for r in enum.reserved_range]
    lines += _reserved_names(enum.reserved_name, indent + "  ")
    lines.append(f"{indent}}}")
    return lines


def _reserved_names(names: Iterable[str], indent: str) -> list[str]:
    quoted = [f'"{name}"' for name in names]
    return [f"{indent}reserved {', '.join(quoted)};"] if quoted else []


def _print_message(
    message: descriptor_pb2.DescriptorProto, renderer: _OptionRenderer, indent: str, proto3: bool
) -> list[str]:
    inner = indent + "  "
    lines = ["", f"{indent}message {message.name} {{"]
    lines += [f"{inner}option {entry};" for entry in renderer.render(message.options)]
    printed_oneofs: set[int] = set()
    for field in message.field:
        real_oneof = field.HasField("oneof_index") and not field.proto3_optional
        if not real_oneof:
            lines.append(inner + _print_field(field, renderer, proto3, in_oneof=False))
            continue
        if field.oneof_index in printed_oneofs:
            continue
        printed_oneofs.add(field.oneof_index)
        oneof = message.oneof_decl[field.oneof_index]
        lines.append(f"{inner}oneof {oneof.name} {{")
        lines += [f"{inner}  option {entry};" for entry in renderer.render(oneof.options)]
        for member in message.field:
            if member.HasField("oneof_index") and member.oneof_index == field.oneof_index:
                lines.append(inner + "  " + _print_field(member, renderer, proto3, in_oneof=True))
        lines.append(f"{inner}}}")
    for ext_range in message.extension_range:
        end = "max" if ext_range.end - 1 >= _MAX_FIELD_NUMBER else str(ext_range.end - 1)
        lines.append(f"{inner}extensions {ext_range.start} to {end};")
    for reserved in message.reserved_range:
        lines.append(f"{inner}reserved {reserved.start} to {reserved.end - 1};")
    lines += _reserved_names(message.reserved_name, inner)
    for enum in message.enum_type:
        lines += _print_enum(enum, renderer, inner)
    for nested in message.nested_type:
        lines += _print_message(nested, renderer, inner, proto3)
    lines.append(f"{indent}}}")
    return lines


def _print_field(
    field: descriptor_pb2.FieldDescriptorProto, renderer: _OptionRenderer, proto3: bool, *, in_oneof: bool
) -> str:
    type_name = _SCALAR_NAMES.get(field.type) or field.type_name.lstrip(".")
    if in_oneof:
        label = ""
    elif field.label == field.LABEL_REPEATED:
        label = "repeated "
    elif field.label == field.LABEL_REQUIRED:
        label = "required "
    elif proto3 and not field.proto3_optional:
        label = ""
    else:
        label = "optional "
    opts: list[str] = []
    if field.HasField("default_value"):
        default = field.default_value
        if field.type in (field.TYPE_STRING, field.TYPE_BYTES):
            default = '"' + default + '"'
        opts.append(f"default = {default}")
    if field.HasField("json_name") and field.json_name != _lower_camel(field.name):
        opts.append(f'json_name = "{field.json_name}"')
    opts += renderer.render(field.options) if field.HasField("options") else []
    suffix = f" [{', '.join(opts)}]" if opts else ""
    return f"{label}{type_name} {field.name} = {field.number}{suffix};"


def _lower_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def finish_generated_tree(gen_root: Path) -> None:
    """Make gen/python/src a regular, typed package tree: an empty __init__.py in
    every generated directory (setuptools and mypy then see plain packages) and
    a PEP 561 marker in each top-level package."""
    src = gen_root / "python" / "src"
    for directory in sorted(p for p in src.rglob("*") if p.is_dir() and p.name != "__pycache__"):
        (directory / "__init__.py").touch()
        if directory.parent == src:
            (directory / "py.typed").touch()


# --- protoc plugin ------------------------------------------------------------------


def grpc_python_plugin() -> None:
    """protoc-gen-grpc_python: runs grpcio-tools' bundled generator for buf."""
    from grpc_tools import protoc

    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    by_name = {f.name: f for f in request.proto_file}
    # Only files that declare services get a *_pb2_grpc.py.
    targets = [name for name in request.file_to_generate if by_name[name].service]
    if targets:
        with tempfile.TemporaryDirectory() as tmp:
            descriptor_set = Path(tmp) / "request.binpb"
            descriptor_set.write_bytes(
                descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
            )
            out_dir = Path(tmp) / "out"
            out_dir.mkdir()
            args = [
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptor_set}",
                f"--grpc_python_out={out_dir}",
            ]
            if protoc.main([*args, *targets]) != 0:
                response.error = "grpc_tools.protoc failed for " + ", ".join(targets)
            else:
                for path in sorted(out_dir.rglob("*.py")):
                    response.file.add(name=str(path.relative_to(out_dir)), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())


# Field numbers in descriptor.proto of the paths source_code_info uses.
_MESSAGE_TYPE, _ENUM_TYPE, _SERVICE = 4, 5, 6  # in FileDescriptorProto
_FIELD, _NESTED_TYPE, _NESTED_ENUM = 2, 3, 4  # in DescriptorProto
_ENUM_VALUE = 2  # in EnumDescriptorProto
_METHOD = 2  # in ServiceDescriptorProto

DOCS_FILE = "trading/contract_docs.json"


def _name_message(
    names: dict[tuple[int, ...], str], path: tuple[int, ...], proto: descriptor_pb2.DescriptorProto, full: str
) -> None:
    names[path] = full
    for i, f in enumerate(proto.field):
        names[(*path, _FIELD, i)] = f"{full}.{f.name}"
    for i, nested in enumerate(proto.nested_type):
        _name_message(names, (*path, _NESTED_TYPE, i), nested, f"{full}.{nested.name}")
    for i, e in enumerate(proto.enum_type):
        _name_enum(names, (*path, _NESTED_ENUM, i), e, f"{full}.{e.name}")


def _name_enum(
    names: dict[tuple[int, ...], str],
    path: tuple[int, ...],
    proto: descriptor_pb2.EnumDescriptorProto,
    full: str,
) -> None:
    names[path] = full
    # Enum values are scoped to the enum's parent in protobuf, but named here under the enum.
    for i, v in enumerate(proto.value):
        names[(*path, _ENUM_VALUE, i)] = f"{full}.{v.name}"


def contract_docs(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> dict[str, str]:
    """Leading comments of every message, field, enum, enum value, service
    and method, by full name (``trading.execution.v1.PlaceOrderRequest.symbol``)."""
    docs: dict[str, str] = {}
    for file in files:
        # source_code_info addresses elements by path (field numbers and indexes).
        names: dict[tuple[int, ...], str] = {}
        prefix = f"{file.package}." if file.package else ""
        for i, m in enumerate(file.message_type):
            _name_message(names, (_MESSAGE_TYPE, i), m, prefix + m.name)
        for i, e in enumerate(file.enum_type):
            _name_enum(names, (_ENUM_TYPE, i), e, prefix + e.name)
        for i, svc in enumerate(file.service):
            names[(_SERVICE, i)] = prefix + svc.name
            for j, method in enumerate(svc.method):
                names[(_SERVICE, i, _METHOD, j)] = f"{prefix}{svc.name}.{method.name}"
        for location in file.source_code_info.location:
            name = names.get(tuple(location.path))
            text = location.leading_comments.strip()
            if name is not None and text:
                docs[name] = "\n".join(line.strip() for line in text.splitlines())
    return dict(sorted(docs.items()))


def docs_plugin() -> None:
    """protoc-gen-trading_docs: writes :data:`DOCS_FILE`, the contract's comments
    by full name, for what is generated from the descriptors at run time (the
    gateway's OpenAPI descriptions); the pb2 modules carry no source info."""
    import json

    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    wanted = set(request.file_to_generate)
    docs = contract_docs(f for f in request.proto_file if f.name in wanted)
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    response.file.add(name=DOCS_FILE, content=json.dumps(docs, indent=1, sort_keys=True) + "\n")
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    stage_third_party()
