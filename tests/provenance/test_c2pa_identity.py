"""The local C2PA signing identity (made on first use when the operator configured none): made once when many
requests or processes ask at once, and a mismatched pair left on disk is replaced, not used for every signature."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from pathlib import Path

import pytest

from faceweave.provenance.c2pa import SigningIdentity, _pair_matches, make_local_identity, signing_identity


def test_a_key_that_is_not_the_certificates_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second = make_local_identity(tmp_path / "a"), make_local_identity(tmp_path / "b")
    mixed = tmp_path / "mixed"  # what two makers at once left behind: one's chain, the other's key
    mixed.mkdir()
    (mixed / "signer-chain.pem").write_bytes(first.cert_chain)
    (mixed / "signer-key.pem").write_bytes(second.private_key)
    assert _pair_matches(first) and not _pair_matches(SigningIdentity(first.cert_chain, second.private_key, True))
    with caplog.at_level("WARNING"):
        healed = signing_identity(local_dir=mixed)
    assert _pair_matches(healed) and "does not belong to its certificate" in caplog.text
    assert signing_identity(local_dir=mixed) == healed  # kept: read back, not made again


def test_threads_asking_at_once_get_one_identity(tmp_path: Path) -> None:
    with cf.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: signing_identity(local_dir=tmp_path), range(16)))
    assert all(g == got[0] for g in got) and _pair_matches(got[0])


def _make(folder: str) -> bytes:
    return signing_identity(local_dir=Path(folder)).cert_chain


def test_processes_asking_at_once_get_one_identity(tmp_path: Path) -> None:
    with cf.ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        chains = list(pool.map(_make, [str(tmp_path)] * 8))
    assert len(set(chains)) == 1
    assert _pair_matches(signing_identity(local_dir=tmp_path))
