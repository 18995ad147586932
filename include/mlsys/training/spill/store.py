"""Where a spilled model's layers live between uses: host memory, or memory-mapped files on disk (torch only).

Each layer is one *record*, a flat byte buffer with its parameters, its buffers (BatchNorm running
statistics, ...) and its optimizer state, each at a 64-byte-aligned offset:

    | header 64 B | param 0 | param 1 | ... | buffer 0 | ... | state 0.exp_avg | state 0.exp_avg_sq | ... |
      byte 0 = 1 once the optimizer state has been written (optimizers create it lazily, at the first step)

Tiers:

- ``host``: one uint8 tensor per record in RAM, pinned when the compute device is a GPU (from
  ``set_state`` on, when the record has its final size), so host <-> device copies run asynchronously.
- ``disk``: one file per record (``<root>/layer_00003.bin``), preallocated with ``posix_fallocate`` so a
  full disk fails at creation with an ``OSError`` naming the path (never later, as a SIGBUS inside a
  mapping), and memory-mapped (``MAP_SHARED``) only while the layer is in use. A mapping's pages count
  towards the process's RSS only while it is mapped, so a model larger than RAM trains within a RAM budget
  (with ``return_freed_memory``, so that freed tensors leave the RSS too).
  Several processes can map the same store (``SpillStore.open(root)``): SHARP's workers do.

A checkpoint (``save_checkpoint``) is one file written to a temporary name, fsynced and renamed, so a
full disk leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

ALIGN = 64
HEADER = 64
MANIFEST = "manifest.json"
TIERS = ("host", "disk")


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def return_freed_memory() -> bool:
    """Make glibc give freed tensors back to the OS at once (a fixed 64 KiB mmap threshold).

    By default glibc raises its mmap threshold after large frees and then recycles freed tensors
    inside its heap, which keeps them in the RSS: a process training within a RAM budget on the disk
    tier would hold every size of shard it ever used. Same as ``MALLOC_MMAP_THRESHOLD_=65536``.
    Returns False where libc has no mallopt (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, 64 * 1024))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def dtype_of(name: str) -> torch.dtype:
    return getattr(torch, name.removeprefix("torch."))


@dataclass(frozen=True)
class Slot:
    kind: str  # param | buffer | state
    name: str  # "weight", "running_mean", "0.exp_avg" (state of parameter 0)
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Layout:
    """Where each tensor of one layer sits in its record."""

    slots: tuple[Slot, ...]
    nbytes: int

    @classmethod
    def of(cls, module: nn.Module) -> "Layout":
        """Layout of ``module``'s parameters and buffers (optimizer state is appended by ``with_state``)."""
        entries = [("param", n, tuple(p.shape), str(p.dtype)) for n, p in module.named_parameters()]
        entries += [("buffer", n, tuple(b.shape), str(b.dtype)) for n, b in module.named_buffers()]
        return cls((), HEADER)._append(entries)

    def with_state(self, state: dict[int, dict[str, tuple[tuple[int, ...], str]]]) -> "Layout":
        """This layout plus optimizer state slots, {param index: {key: (shape, dtype)}}; the prefix is unchanged."""
        entries = [("state", f"{i}.{key}", tuple(state[i][key][0]), str(state[i][key][1]))
                   for i in sorted(state) for key in sorted(state[i])]
        return self._append(entries)

    def _append(self, entries: list[tuple[str, str, tuple[int, ...], str]]) -> "Layout":
        slots, offset = list(self.slots), self.nbytes
        for kind, name, shape, dtype in entries:
            nbytes = torch.Size(shape).numel() * dtype_of(dtype).itemsize
            slots.append(Slot(kind, name, shape, dtype, offset, nbytes))
            offset = _align(offset + nbytes)
        return Layout(tuple(slots), offset)

    @property
    def weights_nbytes(self) -> int:
        """Bytes of the header, parameters and buffers: the prefix a forward-only use needs."""
        ends = [s.offset + s.nbytes for s in self.slots if s.kind != "state"]
        return _align(max(ends, default=HEADER))

    def bytes_of(self, kind: str) -> int:
        return sum(s.nbytes for s in self.slots if s.kind == kind)

    def to_json(self) -> dict:
        return {"nbytes": self.nbytes, "slots": [asdict(s) for s in self.slots]}

    @classmethod
    def from_json(cls, data: dict) -> "Layout":
        return cls(tuple(Slot(**{**s, "shape": tuple(s["shape"])}) for s in data["slots"]), data["nbytes"])


def views(layout: Layout, buf: torch.Tensor) -> dict[tuple[str, str], torch.Tensor]:
    """Typed, shaped views into a record's bytes (on whatever device ``buf`` lives); ``buf`` may be a prefix."""
    out = {}
    for s in layout.slots:
        if s.offset + s.nbytes > buf.numel():
            continue
        out[(s.kind, s.name)] = buf[s.offset : s.offset + s.nbytes].view(dtype_of(s.dtype)).view(s.shape)
    return out


def state_ready(buf: torch.Tensor) -> bool:
    return bool(buf[0].item())


class SpillStore:
    """The records of one model's layers, in one tier."""

    def __init__(self, tier: str = "host", root: str | Path | None = None, pin: bool = False):
        if tier not in TIERS:
            raise ValueError(f"SpillStore tier={tier!r} is invalid: use one of {list(TIERS)}")
        if tier == "disk" and root is None:
            raise ValueError("SpillStore tier='disk' needs a root folder for its files: pass root=...")
        self.tier, self.pin = tier, pin
        self.root = Path(root) if root is not None else None
        self.layouts: list[Layout] = []
        self._host: list[torch.Tensor] = []
        self._maps: dict[int, torch.Tensor] | None = None  # disk tier: mappings kept open (see open)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    # -- creation ---------------------------------------------------------------------------------------

    def add(self, module: nn.Module) -> int:
        """Copy ``module``'s parameters and buffers into a new record; optimizer state is added by ``set_state``."""
        layout = Layout.of(module)
        index = len(self.layouts)
        if self.tier == "host":
            self._host.append(self._host_buffer(layout.nbytes, pin=False))  # pinned once its final size is known
        else:
            self._allocate(self.path(index), layout.nbytes)
        self.layouts.append(layout)
        buf = self.acquire(index)
        v = views(layout, buf)
        with torch.no_grad():
            for name, p in module.named_parameters():
                v[("param", name)].copy_(p.detach())
            for name, b in module.named_buffers():
                v[("buffer", name)].copy_(b)
        del v, buf  # the disk tier's mapping closes here
        return index

    def set_state(self, index: int, state: dict[int, dict[str, tuple[tuple[int, ...], str]]]) -> None:
        """Grow record ``index`` by slots for its optimizer state (shapes from the pilot); they stay unwritten."""
        layout = self.layouts[index].with_state(state)
        if self.tier == "host":
            old = self._host[index]
            buf = self._host_buffer(layout.nbytes, pin=self.pin)
            buf[: old.numel()].copy_(old)
            self._host[index] = buf
        else:
            self._allocate(self.path(index), layout.nbytes, truncate=False)
        self.layouts[index] = layout

    @staticmethod
    def _host_buffer(nbytes: int, pin: bool) -> torch.Tensor:
        buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
        buf[:HEADER].zero_()  # state slots are read only once the header says they were written
        return buf

    def _allocate(self, path: Path, nbytes: int, truncate: bool = True) -> None:
        fd = None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0), 0o600)
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
                fd = None
                if truncate:
                    path.unlink(missing_ok=True)
            raise OSError(exc.errno, f"spill store: cannot allocate {nbytes / 2**20:.1f} MiB at {path} "
                                     f"({exc.strerror}); free space there or choose another spill folder") from exc
        finally:
            if fd is not None:
                os.close(fd)

    def save_manifest(self) -> Path:
        """Write the layouts next to the files, so another process can ``open`` this store."""
        if self.root is None:
            raise ValueError("a host-tier store without a root has no manifest: pass root=... to share it")
        path = self.root / MANIFEST
        path.write_text(json.dumps({"tier": self.tier, "layouts": [lay.to_json() for lay in self.layouts]}))
        return path

    @classmethod
    def open(cls, root: str | Path, keep_mapped: bool = False) -> "SpillStore":
        """Map an existing disk-tier store written by another process.

        ``keep_mapped``: keep each file mapped after first use (no page faults on every reuse): for a
        store in memory (``/dev/shm``) shared by processes, as SHARP's workers do; not for a RAM budget.
        """
        data = json.loads((Path(root) / MANIFEST).read_text())
        store = cls("disk", root)
        store.layouts = [Layout.from_json(lay) for lay in data["layouts"]]
        store._maps = {} if keep_mapped else None
        return store

    # -- use ----------------------------------------------------------------------------------------------

    def path(self, index: int) -> Path:
        assert self.root is not None
        return self.root / f"layer_{index:05d}.bin"

    def acquire(self, index: int) -> torch.Tensor:
        """The record's bytes on the host: the RAM tensor, or a fresh MAP_SHARED mapping of its file.

        A mapping is unmapped when the last tensor viewing it is freed.
        """
        if self.tier == "host":
            return self._host[index]
        if self._maps is not None and index in self._maps:
            return self._maps[index]
        buf = torch.from_file(str(self.path(index)), shared=True, size=self.layouts[index].nbytes, dtype=torch.uint8)
        if self._maps is not None:
            self._maps[index] = buf
        return buf

    def __len__(self) -> int:
        return len(self.layouts)

    @property
    def nbytes(self) -> int:
        return sum(lay.nbytes for lay in self.layouts)

    def load_into(self, index: int, module: nn.Module) -> None:
        """Copy a record's parameters and buffers into ``module`` (to export the trained model)."""
        buf = self.acquire(index)
        v = views(self.layouts[index], buf)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(v[("param", name)])
            for name, b in module.named_buffers():
                b.copy_(v[("buffer", name)])

    def records(self) -> Iterator[tuple[int, torch.Tensor]]:
        for i in range(len(self)):
            yield i, self.acquire(i)


def save_checkpoint(store: SpillStore, path: str | Path) -> Path:
    """All records in one file, atomically: a failed write (a full disk) leaves the old checkpoint as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    header = json.dumps({"layouts": [lay.to_json() for lay in store.layouts]}).encode()
    try:
        with open(tmp, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for _, buf in store.records():
                f.write(buf.numpy().tobytes() if buf.device.type == "cpu" else buf.cpu().numpy().tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, f"checkpoint: cannot write {path} ({exc.strerror}); the previous checkpoint "
                                 "there is unchanged") from exc
    return path


def load_checkpoint(store: SpillStore, path: str | Path) -> None:
    """Restore every record of ``store`` from a checkpoint written by ``save_checkpoint``."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        layouts = [Layout.from_json(lay) for lay in json.loads(f.read(size))["layouts"]]
        if layouts != store.layouts:
            raise ValueError(f"checkpoint {path} holds a different model (layouts differ): load it into a store "
                             "built from the same layers and optimizer")
        for _, buf in store.records():
            data = f.read(buf.numel())
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
