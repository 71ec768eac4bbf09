"""Signed manifests: a released folder verifies, and every kind of tampering is named.

Real files in tmp_path, real Ed25519 keys: a small cohort written as CSV and
Parquet, a manifest built by `build_manifest`, signed and written as the
coordinator writes it.
"""

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import FedsynthError
from protocols.plan import StudyPlan
from protocols.release.manifest import (MANIFEST_NAME, SitePrivacySpent, build_manifest,
                                        write_manifest)
from protocols.release.signing import (SIGNATURE, SignatureError, canonical_bytes,
                                       check_signature, key_fingerprint, public_key_pem,
                                       sign_manifest)
from protocols.release.verification import load_trusted_key, verify_release

CSV, PARQUET = "synthetic.csv", "synthetic.parquet"


def write_release(folder: Path, key: Ed25519PrivateKey) -> Path:
    """A small signed release: synthetic.csv, synthetic.parquet, manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    cohort = pd.DataFrame({"age": [34, 51, 67, 80], "sex": ["F", "M", "F", "M"],
                           "weight": [61.5, 80.25, None, 70.0]})
    cohort.to_csv(folder / CSV, index=False)
    cohort.to_parquet(folder / PARQUET, index=False)
    manifest = build_manifest(schema_sha256="ab" * 32, plan=StudyPlan(rounds=2, epsilon=2.0),
                              sites={"siteA": SitePrivacySpent(1.93, 40),
                                     "siteB": SitePrivacySpent(1.87, 40)},
                              contributions={"siteA": [1, 2], "siteB": [1, 2]},
                              engine="simulation", tls=False,
                              files={CSV: folder / CSV, PARQUET: folder / PARQUET},
                              rows=len(cohort))
    write_manifest(sign_manifest(manifest, key), folder / MANIFEST_NAME)
    return folder


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def release(tmp_path, key) -> Path:
    return write_release(tmp_path / "release", key)


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def _problems(folder: Path, trusted=None) -> list[str]:
    return [str(p) for p in verify_release(folder, trusted).problems]


def test_a_signed_release_verifies_and_names_its_key(release, key):
    check = verify_release(release)
    assert check.ok and check.files == (CSV, PARQUET)
    assert check.fingerprint == key_fingerprint(key.public_key()) and not check.pinned
    assert f"verified: 2 files, signed by key {check.fingerprint} (not pinned)" in check.summary()
    assert "not who that is" in check.summary()  # integrity, not authorship


def test_a_release_verifies_against_the_trusted_key(release, key):
    check = verify_release(release, key.public_key())
    assert check.ok and check.pinned
    assert check.summary().startswith(f"verified: 2 files, signed by key {check.fingerprint} "
                                      "(trusted)")


def test_the_signature_block_carries_the_public_key_and_its_fingerprint(release, key):
    block = _manifest(release)[SIGNATURE]
    assert block["algorithm"] == "Ed25519"
    assert block["public_key"] == public_key_pem(key.public_key())
    assert block["key_fingerprint"] == key_fingerprint(key.public_key())


def test_canonical_bytes_ignore_key_order_and_the_signature_block():
    manifest = {"b": 1, "a": {"y": [1.5, None], "x": "é"}}
    shuffled = {"a": {"x": "é", "y": [1.5, None]}, "b": 1, SIGNATURE: {"value": "…"}}
    assert canonical_bytes(manifest) == canonical_bytes(shuffled)
    assert canonical_bytes(manifest) == b'{"a":{"x":"\\u00e9","y":[1.5,null]},"b":1}'


def test_an_edited_manifest_field_breaks_the_signature(release):
    manifest = _manifest(release)
    manifest["privacy"]["sites"]["siteA"]["epsilon_spent"] = 0.5
    write_manifest(manifest, release / MANIFEST_NAME)
    assert _problems(release) == [f"{MANIFEST_NAME}: the signature does not match the "
                                  "manifest's content: the manifest was edited after it was "
                                  "signed"]


def test_an_edited_csv_byte_is_named_with_both_hashes(release):
    data = bytearray((release / CSV).read_bytes())
    data[-3] ^= 0x01
    (release / CSV).write_bytes(bytes(data))
    expected = _manifest(release)["files"][CSV]["sha256"]
    [problem] = _problems(release)
    assert problem.startswith(f"{CSV}: sha256 differs (manifest {expected[:12]}…, file ")
    assert "size" not in problem


def test_a_truncated_parquet_is_named_with_its_sizes(release):
    data = (release / PARQUET).read_bytes()
    (release / PARQUET).write_bytes(data[:-100])
    [problem] = _problems(release)
    assert problem.startswith(f"{PARQUET}: sha256 differs")
    assert f"size differs (manifest {len(data)} bytes, file {len(data) - 100} bytes)" in problem


def test_a_removed_file_is_named(release):
    (release / PARQUET).unlink()
    assert _problems(release) == [f"{PARQUET}: listed in the manifest but missing"]


def test_an_added_data_file_is_named_and_other_files_are_said_to_be_uncovered(release):
    shutil.copy(release / CSV, release / "synthetic-extra.csv")
    (release / "report.html").write_text("<html></html>")
    (release / "checkpoints").mkdir()
    check = verify_release(release)
    assert [str(p) for p in check.problems] == [
        "synthetic-extra.csv: a data file in the release folder that the manifest does not "
        "list (added after release?)"]
    assert check.uncovered == ("report.html",)


def test_a_manifest_re_signed_with_another_key_verifies_only_unpinned(release, key):
    manifest = _manifest(release)
    manifest["rows"] = 4000
    other = Ed25519PrivateKey.generate()
    write_manifest(sign_manifest(manifest, other), release / MANIFEST_NAME)
    check = verify_release(release)
    assert check.ok and check.fingerprint == key_fingerprint(other.public_key())
    assert _problems(release, key.public_key()) == [
        f"{MANIFEST_NAME}: signed by key {key_fingerprint(other.public_key())}, not by the "
        f"trusted key {key_fingerprint(key.public_key())}"]


def test_a_swapped_public_key_in_the_signature_block_is_refused(release):
    manifest = _manifest(release)
    other = Ed25519PrivateKey.generate().public_key()
    manifest[SIGNATURE].update(public_key=public_key_pem(other),
                               key_fingerprint=key_fingerprint(other))
    write_manifest(manifest, release / MANIFEST_NAME)
    assert "the manifest was edited after it was signed" in _problems(release)[0]


def test_an_extra_field_in_the_signature_block_is_refused(release):
    """The block itself is not signed: an 'approved_by' slipped into it must not pass."""
    manifest = _manifest(release)
    manifest[SIGNATURE]["approved_by"] = "the ethics board"
    with pytest.raises(SignatureError, match="signature block is malformed"):
        check_signature(manifest)


def test_a_fingerprint_that_is_not_the_embedded_keys_is_refused(release):
    manifest = _manifest(release)
    manifest[SIGNATURE]["key_fingerprint"] = "00" * 32
    with pytest.raises(SignatureError, match="not the fingerprint of its public_key"):
        check_signature(manifest)


def test_an_unsigned_manifest_is_named_and_its_files_still_checked(release):
    manifest = _manifest(release)
    del manifest[SIGNATURE]
    write_manifest(manifest, release / MANIFEST_NAME)
    (release / PARQUET).unlink()
    problems = _problems(release)
    assert problems[0].startswith(f"{MANIFEST_NAME}: not signed (no signature block)")
    assert problems[1] == f"{PARQUET}: listed in the manifest but missing"


def test_a_wrong_trusted_key_is_named(release, key):
    other = Ed25519PrivateKey.generate().public_key()
    [problem] = _problems(release, other)
    assert f"not by the trusted key {key_fingerprint(other)}" in problem


def test_a_reformatted_manifest_is_named_even_though_its_content_is_signed(release):
    path = release / MANIFEST_NAME
    path.write_text(json.dumps(_manifest(release)))
    assert _problems(release) == [f"{MANIFEST_NAME}: its bytes are not laid out as fedsynth "
                                  "writes them (edited after release?)"]


def test_a_duplicated_key_makes_the_manifest_unreadable(release):
    path = release / MANIFEST_NAME
    path.write_text(path.read_text().replace('{\n  "synthetic"', '{\n  "rows": 1,\n  "synthetic"',
                                             1))
    [problem] = _problems(release)
    assert problem.startswith(f"{MANIFEST_NAME}: unreadable: the key 'rows' appears twice")


def test_a_listed_path_outside_the_folder_is_refused(release, key):
    manifest = _manifest(release)
    manifest["files"]["../escape.csv"] = manifest["files"].pop(CSV)
    write_manifest(sign_manifest(manifest, key), release / MANIFEST_NAME)
    problems = _problems(release)
    assert f"{MANIFEST_NAME}: lists '../escape.csv', which is not a file name in this folder" \
        in problems


def test_a_folder_without_manifest_is_named_and_a_missing_folder_is_a_usage_error(tmp_path):
    assert _problems(tmp_path) == [f"{MANIFEST_NAME}: missing: this is not a fedsynth release "
                                   "folder, or its manifest was removed"]
    with pytest.raises(FedsynthError, match="is not a folder"):
        verify_release(tmp_path / "absent")


def test_a_trusted_key_file_must_be_an_ed25519_public_key(tmp_path, key):
    path = tmp_path / "manifest-signing.pub"
    path.write_text(public_key_pem(key.public_key()))
    assert key_fingerprint(load_trusted_key(path)) == key_fingerprint(key.public_key())
    path.write_text("not a key")
    with pytest.raises(FedsynthError, match="is not an Ed25519 public key"):
        load_trusted_key(path)
    with pytest.raises(FedsynthError, match="Cannot read the public key"):
        load_trusted_key(tmp_path / "absent.pub")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, key) -> dict[str, bytes]:
    folder = write_release(tmp_path_factory.mktemp("pristine"), key)
    return {name: (folder / name).read_bytes() for name in (CSV, PARQUET, MANIFEST_NAME)}


@given(name=st.sampled_from([CSV, PARQUET, MANIFEST_NAME]), where=st.floats(0, 1),
       flip=st.integers(1, 255))
def test_any_single_byte_change_is_detected(pristine, key, name, where, flip):
    files = dict(pristine)
    data = bytearray(files[name])
    data[min(int(where * len(data)), len(data) - 1)] ^= flip
    files[name] = bytes(data)
    with tempfile.TemporaryDirectory() as folder:
        for file_name, content in files.items():
            (Path(folder) / file_name).write_bytes(content)
        assert not verify_release(Path(folder), key.public_key()).ok
