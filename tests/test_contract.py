"""The contract: generated code is fresh, and fields stay engine-friendly."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto" / "lpm_npc" / "v1" / "lpm_npc.proto"
GENERATED = ROOT / "lpm_npc" / "v1"


def test_generated_python_is_not_stale(tmp_path):
    """Regenerate from proto/ and compare byte for byte with the checked-in modules."""
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(PROTO)],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("lpm_npc_pb2.py", "lpm_npc_pb2.pyi", "lpm_npc_pb2_grpc.py"):
        fresh = tmp_path / "lpm_npc" / "v1" / name
        assert filecmp.cmp(fresh, GENERATED / name, shallow=False), (
            f"lpm_npc/v1/{name} is stale: run `python -m grpc_tools.protoc -Iproto --python_out=. "
            f"--pyi_out=. --grpc_python_out=. proto/lpm_npc/v1/lpm_npc.proto`")


def test_timestamps_are_integers_and_frames_are_flat():
    from google.protobuf.descriptor import FieldDescriptor as F

    from lpm_npc.v1 import lpm_npc_pb2 as pb

    for msg in (pb.VideoFrame, pb.RigFrame, pb.Event, pb.Stats):
        for field in msg.DESCRIPTOR.fields:
            if field.name.endswith("_us") or field.name.endswith("_samples"):
                assert field.type in (F.TYPE_INT64, F.TYPE_UINT64), f"{msg.__name__}.{field.name}"
    frame_fields = {f.name for f in pb.VideoFrame.DESCRIPTOR.fields}
    assert {"index", "pts_us", "pts_samples", "width", "height", "stride", "format", "data"} <= frame_fields
    # no maps, no nested messages in the per-frame messages (cheap to use from C# and C++)
    for msg in (pb.VideoFrame, pb.RigFrame, pb.AudioChunk):
        for field in msg.DESCRIPTOR.fields:
            assert field.type != F.TYPE_MESSAGE, f"{msg.__name__}.{field.name} is nested"


def test_every_enum_has_an_unspecified_zero():
    from lpm_npc.v1 import lpm_npc_pb2 as pb

    for enum in list(pb.DESCRIPTOR.enum_types_by_name.values()) + [pb.Control.Action.DESCRIPTOR, pb.Event.Type.DESCRIPTOR]:
        assert enum.values_by_number[0].name.endswith("UNSPECIFIED"), enum.name
