"""The segment file's own facts: its name, the frame table's blob, reading a file back."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import RecorderError
from recorder.avcompat import add_stream_from_template
from recorder.buffer import RollingBuffer
from recorder.encoding import MS
from recorder.segment_file import (
    NAME_RE,
    FrameTable,
    complete_files,
    incomplete_files,
    part_path,
    probe,
    put_in_place,
    segment_file_name,
)


@given(st.integers(0, 10**16 - 1))
def test_a_name_says_its_start_and_is_recognised(start_ms):
    name = segment_file_name(start_ms)
    match = NAME_RE.fullmatch(name)
    assert match is not None and int(match.group(1)) == start_ms


rows = st.lists(
    st.tuples(
        st.integers(-(2**62), 2**62), st.integers(0, 2**40), st.integers(0, 2**31), st.booleans()
    ),
    max_size=50,
)


@given(rows, st.binary(max_size=40), st.sampled_from(["", "veryfast", "ultrafast"]))
def test_a_frame_table_survives_its_blob(table_rows, extradata, preset):
    table = FrameTable.build(extradata, table_rows, preset)
    back = FrameTable.from_blob(extradata, table.to_blob(), preset)
    assert back == table


@given(st.binary(min_size=5, max_size=200))
@settings(max_examples=200)
def test_a_damaged_blob_is_refused_in_one_line(blob):
    try:
        table = FrameTable.from_blob(b"", blob)
    except RecorderError as exc:
        assert "damaged" in str(exc)
    else:  # a blob that happens to be well-formed reads back to itself
        assert table.to_blob() == blob


def test_only_whole_names_are_segments_and_parts_are_apart(tmp_path):
    whole = segment_file_name(1)
    (tmp_path / whole).write_bytes(b"x")
    part_path(tmp_path, segment_file_name(2)).write_bytes(b"x")
    (tmp_path / "seg-old.mp4").write_bytes(b"x")
    (tmp_path / "seg-12-NOTHEX00.mp4").write_bytes(b"x")
    assert [p.name for p in complete_files(tmp_path)] == [whole]
    assert [p.suffix for p in incomplete_files(tmp_path)] == [".part"]


def test_put_in_place_renames_a_part_and_refuses_anything_else(tmp_path):
    name = segment_file_name(5)
    part = part_path(tmp_path, name)
    part.write_bytes(b"done")
    assert put_in_place(part) == tmp_path / name
    assert (tmp_path / name).read_bytes() == b"done" and not part.exists()
    with pytest.raises(RecorderError, match="not a segment being written"):
        put_in_place(tmp_path / name)


def test_a_recorded_file_reads_back_the_same_as_its_index_row(recorded_buffer):
    root, *_ = recorded_buffer
    with RollingBuffer.open(root, reconcile=False) as buffer:
        seg = buffer.segments()[0]
        indexed = buffer.frame_tables([seg.id])[seg.id]
    table, width, height, _fps = probe(root / seg.file)
    assert (width, height) == (seg.width, seg.height)
    assert list(table.pos) == list(indexed.pos) and table.key == indexed.key
    # the file's times are the index's, rounded through the file's millisecond pts
    assert all(abs(a - b) <= 1 for a, b in zip(table.times, indexed.times, strict=True))


def test_a_file_without_its_start_tag_is_refused(recorded_buffer, tmp_path):
    """The tag is what re-indexes a file that lost its row: without it, no guessing."""
    import av

    root, *_ = recorded_buffer
    with RollingBuffer.open(root, reconcile=False) as buffer:
        src = root / buffer.segments()[0].file
    bare = tmp_path / segment_file_name(0)
    with av.open(str(src)) as inp, av.open(str(bare), "w", format="mp4") as out:
        video = inp.streams.video[0]
        stream = add_stream_from_template(out, video, time_base=MS)
        for packet in inp.demux(video):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    with pytest.raises(RecorderError, match="no capture_start_ms tag"):
        probe(bare)
