"""Names from outside (hub listings, shard indexes, imported chats) stay inside their destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from xvlm_core.safepath import UnsafePathError, path_inside


@pytest.mark.parametrize("name", ["config.json", "sub/dir/model.safetensors", "中文.model", "a..b/c"])
def test_plain_relative_names_are_accepted(tmp_path: Path, name: str) -> None:
    assert path_inside(tmp_path, name, source="a test") == tmp_path / name


@pytest.mark.parametrize(
    "name",
    ["", "../x.model", "a/../../x", "/etc/passwd", "C:/Windows/x", "c:x", "a\\..\\x", "..", ".", "a//b", "a/",
     "./a", "a\x00b", "a\nb", None, 3],
)
def test_names_that_could_leave_the_folder_are_refused(tmp_path: Path, name: object) -> None:
    with pytest.raises(UnsafePathError, match="Refused the file name .* from a test"):
        path_inside(tmp_path, name, source="a test")


def test_a_link_inside_pointing_outside_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="leads outside"):
        path_inside(root, "link/file", source="a test")


def test_a_link_as_the_last_component_is_left_to_its_owner(tmp_path: Path) -> None:
    # Hub cache snapshots link each file to its blob elsewhere in the cache; replacing a link never writes through it.
    (tmp_path / "blob").write_bytes(b"x")
    root = tmp_path / "snapshot"
    root.mkdir()
    (root / "config.json").symlink_to(tmp_path / "blob")
    assert path_inside(root, "config.json", source="a test") == root / "config.json"


def test_a_last_link_is_checked_only_when_the_link_came_with_the_input(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    root = tmp_path / "root"
    root.mkdir()
    (root / "pic.png").symlink_to(outside)
    assert path_inside(root, "pic.png", source="a hub cache") == root / "pic.png"  # cache snapshots link to blobs
    with pytest.raises(UnsafePathError, match="leads outside"):
        path_inside(root, "pic.png", source="an imported chat", follow_last_link=True)
