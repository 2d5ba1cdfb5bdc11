"""Dataset ingestion: folder layouts, skipped files, hostile zips, and the stratified split."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from posture.archive import _copy_member
from posture.data import UploadLimits, extract_zip, scan_dataset, stratified_split
from posture.errors import DatasetError

LAYOUT = "expected one folder per class"


def png_bytes(shade: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 0)).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, layout: dict[str, int]) -> Path:
    """`{"normal": 3, "train/normal": 2}` -> that many 8x8 PNGs in each folder."""
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / folder / f"img{i:03d}.png").write_bytes(png_bytes(i * 20 % 256))
    return root


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


# ---------------------------------------------------------------- folders


def test_scan_good_tree(tmp_path):
    make_tree(tmp_path, {"turtle_neck": 4, "normal": 3})
    scan = scan_dataset(tmp_path)
    assert scan.root == tmp_path
    assert scan.class_names == ["normal", "turtle_neck"]
    assert scan.counts() == {"normal": 3, "turtle_neck": 4} and scan.total == 7
    assert scan.files["normal"] == sorted(scan.files["normal"]) and all(p.is_file() for p in scan.files["normal"])
    assert scan.skipped == [] and not scan.has_splits and scan.val_files is None


def test_single_wrappers_are_descended(tmp_path):
    make_tree(tmp_path / "upload" / "outer" / "mydata", {"normal": 2, "turtle_neck": 2})
    assert scan_dataset(tmp_path / "upload").root == tmp_path / "upload" / "outer" / "mydata"


def test_os_litter_is_ignored_not_classes(tmp_path):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 2, "__MACOSX/normal": 2, ".hidden": 2})
    (tmp_path / ".DS_Store").write_bytes(b"\0junk")
    (tmp_path / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "normal" / "desktop.ini").write_text("[.ShellClassInfo]")
    (tmp_path / "normal" / "._img000.png").write_bytes(b"AppleDouble")
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"]
    assert scan.counts() == {"normal": 2, "turtle_neck": 2} and scan.skipped == []


def test_corrupt_and_non_image_files_are_skipped_and_reported(tmp_path):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": 3})
    (tmp_path / "normal" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "normal" / "cut.png").write_bytes(png_bytes()[:40])
    (tmp_path / "normal" / "empty.png").write_bytes(b"")
    (tmp_path / "turtle_neck" / "notes.txt").write_text("hello")
    (tmp_path / "turtle_neck" / "inner.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    scan = scan_dataset(tmp_path)
    assert scan.counts() == {"normal": 3, "turtle_neck": 3}
    reasons = dict(scan.skipped)
    assert set(reasons) == {
        "normal/garbage.jpg", "normal/cut.png", "normal/empty.png", "turtle_neck/notes.txt", "turtle_neck/inner.zip",
    }
    assert "not an image" in reasons["normal/garbage.jpg"]
    assert "damaged" in reasons["normal/cut.png"] or "not an image" in reasons["normal/cut.png"]
    assert "empty" in reasons["normal/empty.png"]
    assert ".txt" in reasons["turtle_neck/notes.txt"]
    # Without verification only the suffix counts.
    assert scan_dataset(tmp_path, verify=False).counts()["normal"] == 6


def test_nested_folders_inside_a_class_are_included(tmp_path):
    make_tree(tmp_path, {"normal/day1": 2, "normal/day2/am": 1, "turtle_neck": 2})
    scan = scan_dataset(tmp_path, UploadLimits(max_depth=3))
    assert scan.counts() == {"normal": 3, "turtle_neck": 2}
    make_tree(tmp_path, {"normal/a/b/c": 1})
    scan = scan_dataset(tmp_path, UploadLimits(max_depth=3))
    assert scan.counts()["normal"] == 3 and scan.skipped == [("normal/a/b/c/", "folder nested too deep, not read")]


def test_one_class_is_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {"normal": 5})
    with pytest.raises(DatasetError, match=LAYOUT) as info:
        scan_dataset(tmp_path)
    assert "normal" in str(info.value) and "turtle_neck/" in str(info.value)


@pytest.mark.parametrize("count", [0, 1])
def test_class_with_too_few_images_is_named(tmp_path, count):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": count})
    with pytest.raises(DatasetError, match="'turtle_neck' has"):
        scan_dataset(tmp_path)


def test_class_whose_images_are_all_unreadable_is_named(tmp_path):
    make_tree(tmp_path, {"normal": 3, "slouch": 0})
    (tmp_path / "slouch" / "a.jpg").write_bytes(b"nope")
    (tmp_path / "slouch" / "b.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="'slouch' has 0 usable"):
        scan_dataset(tmp_path)


def test_images_at_the_root_are_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 2})
    (tmp_path / "stray.jpg").write_bytes(png_bytes())
    with pytest.raises(DatasetError, match=LAYOUT) as info:
        scan_dataset(tmp_path)
    assert "stray.jpg" in str(info.value)


def test_flat_folder_of_images_is_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {".": 4})
    with pytest.raises(DatasetError, match=LAYOUT):
        scan_dataset(tmp_path)


def test_case_colliding_classes_are_refused(tmp_path):
    make_tree(tmp_path, {"Normal": 2, "normal": 2, "turtle_neck": 2})
    with pytest.raises(DatasetError, match="letter case") as info:
        scan_dataset(tmp_path)
    assert "'Normal'" in str(info.value) and "'normal'" in str(info.value)


def test_unicode_class_names_are_accepted(tmp_path):
    make_tree(tmp_path, {"정상": 2, "거북목": 2, "normál": 2})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == sorted(["정상", "거북목", "normál"])
    assert scan.total == 6


def test_train_and_val_folders_are_used(tmp_path):
    make_tree(tmp_path / "ds", {"train/normal": 3, "train/turtle_neck": 4, "val/normal": 1, "val/turtle_neck": 2})
    make_tree(tmp_path / "ds", {"test/normal": 1})
    scan = scan_dataset(tmp_path)  # through the ds/ wrapper
    assert scan.has_splits and scan.class_names == ["normal", "turtle_neck"]
    assert {k: len(v) for k, v in scan.files.items()} == {"normal": 3, "turtle_neck": 4}
    assert {k: len(v) for k, v in scan.val_files.items()} == {"normal": 1, "turtle_neck": 2}
    assert all("/train/" in p.as_posix() for p in scan.files["normal"])
    assert scan.counts() == {"normal": 4, "turtle_neck": 6}
    assert [path for path, _ in scan.skipped] == ["test/"]


@pytest.mark.parametrize("name", ["no_side_view", "No_Side_View"])
def test_a_no_side_view_folder_is_not_a_class(tmp_path, name):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 3, name: 4, f"{name}/empty_rooms": 1})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"] and len(scan.negatives) == 5
    assert scan.counts() == {"normal": 2, "turtle_neck": 3}


def test_no_side_view_folders_in_train_and_val(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "train/no_side_view": 3,
                         "val/normal": 1, "val/turtle_neck": 1, "val/no_side_view": 2})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"]
    assert len(scan.negatives) == 3 and len(scan.val_negatives) == 2


def test_a_no_side_view_folder_alone_is_not_a_dataset(tmp_path):
    make_tree(tmp_path, {"normal": 3, "no_side_view": 3})
    with pytest.raises(DatasetError, match="at least 2 classes"):
        scan_dataset(tmp_path)


def test_train_and_val_must_agree_on_classes(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "val/normal": 1, "val/slouch": 1})
    with pytest.raises(DatasetError, match="same class folders"):
        scan_dataset(tmp_path)


def test_class_missing_from_val_is_refused(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "val/normal": 1, "val/turtle_neck": 0})
    with pytest.raises(DatasetError, match="'turtle_neck'.*0 in val/"):
        scan_dataset(tmp_path)


def test_too_many_images_names_the_limit_and_setting(tmp_path):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": 3})
    with pytest.raises(DatasetError, match=r"6 images .* limit of 5 .*POSTURE_MAX_UPLOAD_FILES"):
        scan_dataset(tmp_path, UploadLimits(max_files=5))


def test_symlinks_are_not_followed(tmp_path):
    make_tree(tmp_path / "ds", {"normal": 2, "turtle_neck": 2})
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    os.symlink(secret, tmp_path / "ds" / "normal" / "link.png")
    scan = scan_dataset(tmp_path / "ds")
    assert scan.counts()["normal"] == 2 and scan.skipped == [("normal/link.png", "symbolic link, not followed")]


# ---------------------------------------------------------------- zips


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


# ---------------------------------------------------------------- split


def split_files(tmp_path: Path, sizes: dict[str, int]) -> dict[str, list[Path]]:
    return {name: [tmp_path / name / f"{i}.png" for i in range(n)] for name, n in sizes.items()}


def test_split_covers_every_file_once_with_its_class(tmp_path):
    files = split_files(tmp_path, {"turtle_neck": 13, "normal": 20, "slouch": 2})
    train, val = stratified_split(files, 0.25, seed=0)
    pairs = train + val
    assert len(pairs) == 35 and len({p for p, _ in pairs}) == 35
    names = sorted(files)
    assert all(path.parent.name == names[index] for path, index in pairs)


def test_split_is_stratified_with_both_sides_per_class(tmp_path):
    files = split_files(tmp_path, {"normal": 20, "turtle_neck": 10, "tiny": 2})
    for fraction in (0.01, 0.2, 0.99):
        train, val = stratified_split(files, fraction, seed=1)
        for index in range(3):
            assert any(i == index for _, i in train) and any(i == index for _, i in val)
    train, val = stratified_split(files, 0.2, seed=1)
    val_per_class = [sum(i == index for _, i in val) for index in range(3)]
    assert val_per_class == [4, 1, 2]  # normal, tiny, turtle_neck: 20*0.2, max(1, 0.4), 10*0.2


def test_split_is_deterministic_and_seeded(tmp_path):
    files = split_files(tmp_path, {"normal": 30, "turtle_neck": 30})
    shuffled = {name: list(reversed(paths)) for name, paths in reversed(list(files.items()))}
    assert stratified_split(files, 0.3, seed=7) == stratified_split(shuffled, 0.3, seed=7)
    assert stratified_split(files, 0.3, seed=7)[1] != stratified_split(files, 0.3, seed=8)[1]


def test_split_rejects_bad_fraction(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(split_files(tmp_path, {"a": 2, "b": 2}), 1.0, seed=0)
