"""Each contract gate of CI passes on the repository and fails when it should:
run on a scratch copy of the workspace with one deliberate mistake each."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools import cli, protogen

EXECUTION_PROTO = Path("proto/trading/execution/v1/execution_service.proto")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of everything the gates read."""
    protogen.stage_third_party()
    root = tmp_path_factory.mktemp("workspace")
    for name in ("buf.yaml", "buf.gen.yaml"):
        shutil.copy(cli.ROOT / name, root / name)
    for name in ("proto", "contracts", "build/third_party"):
        shutil.copytree(cli.ROOT / name, root / name)
    shutil.copytree(
        cli.ROOT / "gen/python/src",
        root / "gen/python/src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    return root


@pytest.fixture
def workspace(pristine: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(pristine, root)
    return root


def _edit(root: Path, rel: Path, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


def test_all_gates_pass_on_the_repository(workspace: Path) -> None:
    assert cli.lint_ok(workspace)
    assert cli.format_ok(workspace)
    assert cli.breaking_ok(workspace)
    assert cli.generated_is_fresh(workspace)


def test_renamed_field_in_a_released_message_fails_breaking(workspace: Path) -> None:
    _edit(workspace, EXECUTION_PROTO, "string client_order_id = 2", "string client_order_ref = 2")
    assert cli.lint_ok(workspace)  # still a valid contract...
    assert not cli.breaking_ok(workspace)  # ...but not compatible with the released one


def test_an_added_field_is_not_breaking(workspace: Path) -> None:
    _edit(
        workspace,
        Path("proto/trading/common/v1/types.proto"),
        "  google.protobuf.Timestamp end = 2;",
        "  google.protobuf.Timestamp end = 2;\n"
        "  // Time zone the range was chosen in.\n"
        "  string time_zone = 3;",
    )
    assert cli.breaking_ok(workspace)


def test_unformatted_proto_fails_format(workspace: Path) -> None:
    _edit(workspace, EXECUTION_PROTO, 'syntax = "proto3";', 'syntax   =   "proto3"  ;')
    assert not cli.format_ok(workspace)


def test_proto_edited_without_regenerating_fails_freshness(workspace: Path) -> None:
    _edit(
        workspace,
        Path("proto/trading/common/v1/decimal.proto"),
        "message Money {",
        "message Money {\n  // Free-form note.\n  string note = 3;",
    )
    assert not cli.generated_is_fresh(workspace)


def test_hand_edited_generated_code_fails_freshness(workspace: Path) -> None:
    target = workspace / "gen/python/src/trading/common/v1/decimal_pb2.py"
    target.write_text(target.read_text() + "\n# edited by hand\n")
    assert not cli.generated_is_fresh(workspace)
