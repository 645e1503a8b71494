"""Defaults for capacity profiling: round deadline, model cost, and device presets.

See ``docs/alignment.md`` for the sources of the numbers.
"""

from __future__ import annotations

from .capacity import ClientProfile, ModelCost

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_MODEL_COST", "DEVICE_PRESETS", "GiB", "Mbps", "MiB"]

MiB = 2**20
GiB = 2**30
Mbps = 1e6 / 8  # bytes/s

#: Seconds; a synchronous FL round deadline of a few minutes, as in production
#: cross-device FL (Bonawitz et al., MLSys 2019).
DEFAULT_DEADLINE = 300.0

#: An MoE layer stack for edge training: 8 experts of 16 M fp32 parameters (64 MiB)
#: at 1 GFLOP per training sample each, and an 8 M-parameter shared extractor and
#: router (32 MiB) at 2 GFLOP per training sample; 256 MiB reserved for activations
#: and runtime.
DEFAULT_MODEL_COST = ModelCost(
    64 * MiB,
    1e9,
    num_experts=8,
    shared_param_bytes=32 * MiB,
    shared_flops_per_sample=2e9,
    reserve_bytes=256 * MiB,
)

#: Device classes (see ``docs/alignment.md`` for the sources). ``compute`` is the
#: sustained training throughput: the chip's peak times an assumed utilization.
DEVICE_PRESETS: dict[str, ClientProfile] = {
    "low-end-phone": ClientProfile(
        compute=10e9,  # 8x Cortex-A55 CPU, ~0.1 TFLOP/s peak FP32, 10% sustained
        memory=1 * GiB,  # of 3-4 GB RAM
        downlink=20 * Mbps,
        uplink=5 * Mbps,
        availability=0.5,
        samples_per_round=300,
        device_class="low-end-phone",
    ),
    "high-end-phone": ClientProfile(
        compute=100e9,  # flagship SoC GPU, ~2 TFLOP/s peak FP32, 5% sustained
        memory=3 * GiB,  # of 8-12 GB RAM
        downlink=55 * Mbps,  # Ookla global mobile median (2021-2024)
        uplink=10 * Mbps,
        availability=0.7,
        samples_per_round=1000,
        device_class="high-end-phone",
    ),
    "tablet": ClientProfile(
        compute=260e9,  # Apple M1 GPU 2.6 TFLOP/s peak FP32, 10% sustained
        memory=2 * GiB,  # of 8 GB RAM
        downlink=90 * Mbps,  # Ookla global fixed-broadband median over Wi-Fi
        uplink=20 * Mbps,
        availability=0.8,
        samples_per_round=1000,
        device_class="tablet",
    ),
    "laptop": ClientProfile(
        compute=720e9,  # Apple M2 GPU 3.6 TFLOP/s peak FP32, 20% sustained
        memory=8 * GiB,  # of 16 GB RAM
        downlink=90 * Mbps,
        uplink=40 * Mbps,
        availability=0.9,
        samples_per_round=2000,
        device_class="laptop",
    ),
    "edge-server": ClientProfile(
        compute=3.2e12,  # NVIDIA T4 8.1 TFLOP/s peak FP32, 40% sustained
        memory=16 * GiB,  # T4: 16 GB GDDR6
        downlink=1000 * Mbps,  # 1 Gbit/s Ethernet
        uplink=1000 * Mbps,
        availability=0.99,
        samples_per_round=5000,
        device_class="edge-server",
    ),
}
