"""The CUDA CRF's hash table, read in its PTX (no GPU needed; nvcc is).

Threads of many SMs insert lattice vertices into one table at once: a slot is claimed by a CAS, the
key is written, then the id is published. A thread that reads a published id must also see its key,
or it compares against a stale key and inserts the same vertex twice (a CRF answer that changes from
run to run). That takes acquire loads / an acquire CAS and a release store at device scope, and key
reads that bypass the SM's non-coherent L1 (csrc/common/permutohedral.h).
"""
from __future__ import annotations

import re

import pytest
from _nvcc import ARCHS, compile_ptx, kernel_body


@pytest.fixture(scope="module", params=ARCHS)
def insert_kernel(request):
    ptx = compile_ptx("cuda/densecrf.cu", request.param)
    return kernel_body(ptx, "locate_insert")


def test_slot_reads_and_claims_have_acquire_ordering(insert_kernel):
    assert re.search(r"\bld\.acquire\.gpu(\.global)?\.b32", insert_kernel), "slot loads are not acquire loads"
    assert re.search(r"\batom(\.global)?\.cas\.acq_rel\.gpu|\batom\.acq_rel\.gpu(\.global)?\.cas", insert_kernel), \
        "the slot CAS does not acquire (a lost CAS returns a published id whose key is then read)"


def test_ids_are_published_with_release(insert_kernel):
    assert re.search(r"\bst\.release\.gpu(\.global)?\.b32", insert_kernel), "the id is not published by a release store"


def test_keys_are_read_through_l2(insert_kernel):
    assert re.search(r"\bld\.global\.cg\.[su]32", insert_kernel), "key words are not read with ld.global.cg"


def test_the_unordered_pattern_is_gone(insert_kernel):
    # volatile accesses order nothing in the PTX memory model; a plain (relaxed) CAS acquires nothing
    assert "ld.volatile" not in insert_kernel
    assert "st.volatile" not in insert_kernel
    assert not re.search(r"\batom\.global\.cas\.b32", insert_kernel)
