"""The generated gRPC code in questline/grpc_gen is what proto/ produces today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "questline" / "grpc_gen" / "v1"


def _differences(expected: Path, actual: Path) -> list[str]:
    names = {p.name for p in expected.iterdir() if p.is_file()}
    names |= {p.name for p in actual.iterdir() if p.is_file() and p.suffix in (".py", ".pyi")}
    return sorted(
        name
        for name in names
        if not (expected / name).is_file()
        or not (actual / name).is_file()
        or (expected / name).read_text() != (actual / name).read_text()
    )


def _generate(out: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    _generate(tmp_path)
    stale = _differences(tmp_path, GENERATED)
    assert stale == [], f"stale generated code {stale}: run python scripts/generate_protos.py"


def test_a_changed_file_is_seen(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    _generate(fresh)
    edited = tmp_path / "edited"
    edited.mkdir()
    for path in fresh.iterdir():
        (edited / path.name).write_text(path.read_text())
    (edited / "events_pb2.pyi").write_text("# edited by hand\n")
    (edited / "extra_pb2.py").write_text("")
    assert _differences(fresh, edited) == ["events_pb2.pyi", "extra_pb2.py"]


def test_the_stubs_name_the_generated_package() -> None:
    # protoc's own module path (questline.v1) would shadow the questline package.
    stubs = (GENERATED / "catalog_pb2_grpc.pyi").read_text()
    assert "from questline.grpc_gen.v1 import catalog_pb2" in stubs
    assert "import questline.v1" not in stubs
    assert "from questline.v1" not in stubs
