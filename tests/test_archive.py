"""Zip uploads (posture.archive): good archives with wrappers and litter, and every hostile kind refused
with nothing written outside the destination."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import pytest
from test_data import png_bytes

from posture.archive import _copy_member
from posture.data import UploadLimits, extract_zip, scan_dataset
from posture.errors import DatasetError


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    """Names are written verbatim (ZipInfo keeps '..', leading '/', backslashes)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return path


def good_members(prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{cls}/img{i}.png": png_bytes(i * 40) for cls in ("normal", "turtle_neck") for i in range(3)}


def patch_central(path: Path, name: str, *, flags: int | None = None, file_size: int | None = None) -> None:
    """Edit one member's central-directory record, which is what zipfile trusts when listing."""
    data = bytearray(path.read_bytes())
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) != -1:
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46 : start + 46 + name_len] == name.encode():
            if flags is not None:
                struct.pack_into("<H", data, start + 8, flags)
            if file_size is not None:
                struct.pack_into("<I", data, start + 24, file_size)
            path.write_bytes(bytes(data))
            return
        start += 4
    raise AssertionError(f"{name} not in central directory")


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path: Path):
    """(zip path, dest) with a snapshot check: nothing may appear outside dest, and dest must be gone."""
    (tmp_path / "work").mkdir()
    zip_path, dest = tmp_path / "upload.zip", tmp_path / "work" / "dest"

    def refused(members: dict[str, bytes] | None = None, limits: UploadLimits = UploadLimits(), **kw) -> str:
        if members is not None:
            make_zip(zip_path, members, **kw)
        before = listing(tmp_path)
        with pytest.raises(DatasetError) as info:
            extract_zip(zip_path, dest, limits)
        assert listing(tmp_path) == before  # nothing outside dest, and dest removed
        assert not dest.exists()
        return str(info.value)

    return zip_path, dest, refused


def test_good_zip_with_wrapper_and_litter(sandbox):
    zip_path, dest, _ = sandbox
    members = good_members("mydata/") | {
        "__MACOSX/mydata/normal/._img0.png": b"AppleDouble",
        "mydata/.DS_Store": b"junk",
        "mydata/normal/": b"",
        "mydata/normal/inner.zip": make_zip(zip_path.with_suffix(".inner"), {"../../evil.txt": b"x"}).read_bytes(),
    }
    make_zip(zip_path, members, compression=zipfile.ZIP_DEFLATED)
    root = extract_zip(zip_path, dest)
    assert root == dest / "mydata"
    assert not (dest / "__MACOSX").exists() and not (root / ".DS_Store").exists()
    scan = scan_dataset(root)
    assert scan.counts() == {"normal": 3, "turtle_neck": 3}
    assert [path for path, _ in scan.skipped] == ["normal/inner.zip"]  # kept as a file, never opened
    assert not list(dest.parent.parent.rglob("evil.txt"))


def test_zip_into_existing_empty_folder_and_backslash_names(sandbox):
    zip_path, dest, _ = sandbox
    dest.mkdir()
    make_zip(zip_path, {name.replace("/", "\\"): data for name, data in good_members().items()})
    assert extract_zip(zip_path, dest) == dest
    assert scan_dataset(dest).counts() == {"normal": 3, "turtle_neck": 3}


def test_zip_refuses_non_empty_destination(sandbox):
    zip_path, dest, _ = sandbox
    make_zip(zip_path, good_members())
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="empty folder"):
        extract_zip(zip_path, dest)
    assert listing(dest) == {"keep.txt"}


@pytest.mark.parametrize(
    "name, problem",
    [
        ("../evil.txt", "outside"),
        ("normal/../../evil.txt", "outside"),
        ("..\\evil.txt", "outside"),
        ("/tmp/evil.txt", "absolute"),
        ("C:\\evil.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
    ],
)
def test_zip_path_traversal_is_refused(sandbox, name, problem):
    _, _, refused = sandbox
    message = refused(good_members() | {name: b"pwned"})
    assert problem in message and repr(name) in message
    assert not Path("/tmp/evil.txt").exists()


def test_zip_symlink_member_is_refused(sandbox):
    zip_path, _, refused = sandbox
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in good_members().items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("normal/link.png")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    assert "symbolic link" in refused()


def test_zip_encrypted_member_is_refused(sandbox):
    zip_path, _, refused = sandbox
    make_zip(zip_path, good_members())
    patch_central(zip_path, "normal/img1.png", flags=0x1)
    assert "encrypted" in refused()


def test_zip_bomb_member_ratio_is_refused(sandbox):
    _, _, refused = sandbox
    message = refused(good_members() | {"normal/zeros.bmp": bytes(2 * 2**20)}, compression=zipfile.ZIP_DEFLATED)
    assert "compression ratio" in message and "zeros.bmp" in message


def test_zip_bomb_total_ratio_is_refused(sandbox):
    _, _, refused = sandbox
    bombs = {f"normal/zeros{i}.bmp": bytes(2**19) for i in range(4)}  # each under the 1 MiB ratio floor
    assert "overall compression ratio" in refused(good_members() | bombs, compression=zipfile.ZIP_DEFLATED)


def test_zip_huge_declared_size_is_refused(sandbox):
    zip_path, _, refused = sandbox
    make_zip(zip_path, good_members())
    patch_central(zip_path, "normal/img2.png", file_size=3 * 2**30)
    assert "per-file limit" in refused()


def test_zip_total_size_limit_names_the_setting(sandbox):
    _, _, refused = sandbox
    members = {f"{cls}/big{i}.bmp": os.urandom(3000) for cls in ("a", "b") for i in range(2)}
    assert "POSTURE_MAX_UPLOAD_MB" in refused(members, UploadLimits(max_total_bytes=10_000))


def test_zip_lying_header_is_caught_while_streaming_and_cleaned_up(sandbox):
    zip_path, _, refused = sandbox
    # Good members come first so some files are already written when the liar is reached.
    make_zip(zip_path, good_members() | {"turtle_neck/liar.bmp": os.urandom(50_000)})
    patch_central(zip_path, "turtle_neck/liar.bmp", file_size=1000)
    assert "liar.bmp" in refused(limits=UploadLimits(max_file_bytes=2000))


def test_failed_zip_leaves_an_existing_destination_empty(sandbox):
    zip_path, dest, _ = sandbox
    dest.mkdir()
    make_zip(zip_path, good_members() | {"turtle_neck/liar.bmp": os.urandom(5000)})
    patch_central(zip_path, "turtle_neck/liar.bmp", file_size=100)
    with pytest.raises(DatasetError, match="damaged"):
        extract_zip(zip_path, dest)
    assert dest.is_dir() and listing(dest) == set()


def test_real_bytes_are_counted_while_streaming(tmp_path):
    # zipfile itself stops at the declared size; this checks our own cap does not rely on that.
    zip_path = make_zip(tmp_path / "u.zip", {"normal/big.bmp": os.urandom(5000)})
    with zipfile.ZipFile(zip_path) as zf, pytest.raises(DatasetError, match="per-file limit"):
        _copy_member(zf, zf.infolist()[0], tmp_path / "big.bmp", 10**9, UploadLimits(max_file_bytes=1000))
    assert (tmp_path / "big.bmp").stat().st_size <= 1000


def test_zip_too_many_members_is_refused(sandbox):
    _, _, refused = sandbox
    assert "entries" in refused({f"normal/{i}.txt": b"" for i in range(11)}, UploadLimits(max_members=10))


def test_zip_too_many_images_names_the_setting(sandbox):
    _, _, refused = sandbox
    assert "POSTURE_MAX_UPLOAD_FILES" in refused(good_members(), UploadLimits(max_files=5))


def test_zip_deep_nesting_is_refused(sandbox):
    _, _, refused = sandbox
    deep = "/".join(f"d{i}" for i in range(9)) + "/img.png"
    assert "nested" in refused(good_members() | {deep: png_bytes()})


def test_zip_duplicate_names_after_normalisation_are_refused(sandbox):
    _, _, refused = sandbox
    assert "duplicate" in refused(good_members() | {"normal\\img0.png": png_bytes(), "./normal//img0.png": b"x"})


def test_zip_file_and_folder_with_one_name_is_refused(sandbox):
    _, _, refused = sandbox
    assert "both a file and a folder" in refused(good_members() | {"normal/img0.png/x.png": png_bytes()})


def test_not_a_zip_is_refused(sandbox):
    zip_path, _, refused = sandbox
    zip_path.write_bytes(b"definitely not a zip")
    assert "not a zip" in refused()


def test_truncated_zip_is_refused(sandbox):
    zip_path, _, refused = sandbox
    make_zip(zip_path, good_members())
    zip_path.write_bytes(zip_path.read_bytes()[: zip_path.stat().st_size // 2])
    assert "truncated" in refused()
