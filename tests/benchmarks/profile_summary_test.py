"""The profile breakdown: kernels of GPU planes only, grouped, per step."""

import jax
import pytest

from benchmarks.profile_summary import category, format_summary, summarize_profile

_META = {1: "sm90_xmma_gemm_bf16bf16_tn", 2: "gca_fwd", 3: "loop_add_fusion", 4: "ncclAllReduce"}


def _event(meta: int, start_ms: float, ms: float) -> str:
    start, length = int(start_ms * 1e9), int(ms * 1e9)  # picoseconds
    return f"events {{ metadata_id: {meta} offset_ps: {start} duration_ps: {length} }}"


def _space() -> jax.profiler.ProfileData:
    stream = " ".join([_event(1, 0, 4.0), _event(2, 5, 1.0), _event(1, 7, 2.0), _event(3, 10, 0.5)])
    ops = _event(1, 0, 100.0)  # the "XLA Ops" line repeats kernels as ops: must not count
    meta = " ".join(
        f'event_metadata {{ key: {k} value {{ id: {k} name: "{v}" }} }}' for k, v in _META.items()
    )
    host = _event(4, 0, 50.0)  # host-plane events are not device time
    text = (
        f'planes {{ id: 1 name: "/device:GPU:0" lines {{ id: 1 name: "Stream #7(Compute)" '
        f'timestamp_ns: 0 {stream} }} lines {{ id: 2 name: "XLA Ops" timestamp_ns: 0 {ops} }} '
        f"{meta} }} "
        f'planes {{ id: 2 name: "/host:CPU" '
        f'lines {{ id: 1 name: "python" timestamp_ns: 0 {host} }} '
        f"{meta} }}"
    )
    return jax.profiler.ProfileData.from_text_proto(text)


def test_summary_counts_device_kernels_per_step():
    s = summarize_profile(_space(), steps=2)
    assert s["devices"] == 1
    assert s["total_ms"] == pytest.approx(7.5 / 2)
    assert dict(s["by_category"]) == pytest.approx(
        {"matmul": 3.0, "gca kernels": 0.5, "other fusions": 0.25}
    )
    assert s["top"][0] == ("sm90_xmma_gemm_bf16bf16_tn", pytest.approx(3.0), 1.0)
    table = format_summary(s, "drt")
    assert "| matmul | 3.0 | 80% |" in table and "`gca_fwd`" in table


@pytest.mark.parametrize(
    "name,cat",
    [
        ("swa_bwd_dkv", "swa kernels"),
        ("ncclDevKernel_AllReduce", "collectives"),
        ("cutlass_80_tensorop", "matmul"),
        ("input_reduce_fusion_3", "other fusions"),
    ],
)
def test_category(name, cat):
    assert category(name) == cat
