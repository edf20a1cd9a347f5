"""GPU discovery and slots: each run gets its own GPUs (`CUDA_VISIBLE_DEVICES`) or a CPU slot.

`run.max_concurrent` = 0 means one run per GPU, or one run at a time with no GPU. A run that asks
for more GPUs than are free waits (state `queued`) until a running one ends.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def detect_gpus() -> list[int]:
    """Indices of NVIDIA GPUs from their device nodes; cheap, no driver call."""
    found = []
    for node in glob.glob("/dev/nvidia[0-9]*"):
        m = re.fullmatch(r"/dev/nvidia(\d+)", node)
        if m:
            found.append(int(m.group(1)))
    return sorted(found)


def gpu_device_nodes(indices: list[int]) -> list[str]:
    """The nodes a CUDA process needs: the control nodes plus the allowed GPUs."""
    common = ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"]
    nodes = [n for n in common if os.path.exists(n)]
    nodes += [f"/dev/nvidia{i}" for i in indices if os.path.exists(f"/dev/nvidia{i}")]
    nodes += sorted(glob.glob("/dev/nvidia-caps/*"))
    return nodes


@dataclass
class Slot:
    gpus: list[int]


class GpuSlots:
    """A blocking allocator of GPU indices and concurrent-run slots, first come first served:
    a run takes a ticket when it is submitted (`enqueue`), and only the oldest waiting ticket
    may take a slot; waiters are woken by releases and cancellations, never by polling."""

    def __init__(self, gpus: list[int], max_concurrent: int) -> None:
        self.gpus = list(gpus)
        self.capacity = max_concurrent or max(1, len(self.gpus))
        self._free = list(self.gpus)
        self._running = 0
        self._cond = threading.Condition()
        self._tickets = itertools.count()
        self._waiting: list[int] = []  # tickets in submission order

    def enqueue(self) -> int:
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
            return ticket

    def acquire(self, want: int | list[int] | None, cancelled: threading.Event, ticket: int,
                on_wait: Callable[[], None] | None = None) -> Slot:
        """Block until `ticket` is the oldest waiting and a slot (and `want` GPUs) is free;
        `on_wait` is called once if it has to wait; `InterruptedError` if cancelled."""
        with self._cond:
            try:
                while True:
                    if cancelled.is_set():
                        raise InterruptedError("cancelled while queued")
                    if self._waiting[0] == ticket:
                        slot = self._take(want)
                        if slot is not None:
                            return slot
                    if on_wait is not None:
                        on_wait()
                        on_wait = None
                    self._cond.wait()
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def wake(self) -> None:
        """Let waiters look again (a run was cancelled while queued)."""
        with self._cond:
            self._cond.notify_all()

    def _take(self, want: int | list[int] | None) -> Slot | None:
        picked = self._pick(want)
        if picked is None or self._running >= self.capacity:
            return None
        for g in picked:
            self._free.remove(g)
        self._running += 1
        return Slot(picked)

    def _pick(self, want: int | list[int] | None) -> list[int] | None:
        if isinstance(want, list):
            unknown = [g for g in want if g not in self.gpus]
            if unknown:
                raise ValueError(f"GPU(s) {unknown} are not among the configured GPUs {self.gpus}")
            return list(want) if all(g in self._free for g in want) else None
        count = (1 if self.gpus else 0) if want is None else want
        if count > len(self.gpus):
            raise ValueError(f"asked for {count} GPU(s), this machine has {len(self.gpus)}")
        return self._free[:count] if len(self._free) >= count else None

    def release(self, slot: Slot) -> None:
        with self._cond:
            self._free.extend(slot.gpus)
            self._free.sort()
            self._running -= 1
            self._cond.notify_all()


class GpuSampler:
    """Peak memory and mean utilisation of a run's GPUs, sampled through NVML.

    Needs `nvidia-ml-py` (`labls[gpu]`); without it, or without a GPU, it does nothing and the
    record's GPU fields stay null. Memory is the device's used memory (NVML cannot attribute
    memory to processes inside another PID namespace), so a GPU is never shared between runs.
    """

    def __init__(self, indices: list[int], interval: float = 0.5) -> None:
        self.indices = indices
        self.interval = interval
        self.peak_mb: float | None = None
        self.mean_util: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = _load_nvml() if indices else None

    def start(self) -> None:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, name="labls-nvml", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        nvml = self._nvml
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in self.indices]
            utils: list[float] = []
            while True:
                used = sum(nvml.nvmlDeviceGetMemoryInfo(h).used for h in handles) / 2**20
                self.peak_mb = max(self.peak_mb or 0.0, used)
                utils.append(sum(nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles)
                             / len(handles))
                self.mean_util = sum(utils) / len(utils)
                if self._stop.wait(self.interval):
                    break
        except Exception:  # NVML errors must never fail a run
            return


def _load_nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None
