"""The hardened bwrap command, as built for a root engine, a user's engine and a GPU run
(no GPU here: the launch command is checked, not a CUDA run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labls.sandbox import isolation, limits, syscall_filter


def _spec(tmp_path: Path, **over: object) -> isolation.SandboxSpec:
    base = dict(kind="bwrap", network="none", python="/usr/bin/python3", argv=["train.py"],
                work_dir=tmp_path / "work", run_dir=tmp_path, probe_dir=tmp_path / "probe",
                home_dir=tmp_path / "home", harness_dir=tmp_path / "harness",
                dataset_root=tmp_path / "data", seccomp=tmp_path / "seccomp.bpf")
    base.update(over)
    return isolation.SandboxSpec(**base)  # type: ignore[arg-type]


def _pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def test_root_engine_drops_the_run_to_its_own_uid(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "privileged", lambda: True)
    args = isolation.command(_spec(tmp_path, run_uid=isolation.RUN_UID_BASE + 7))
    payload = args[args.index("--") + 1:]
    assert payload[0] == "/usr/bin/setpriv"
    assert f"--reuid={isolation.RUN_UID_BASE + 7}" in payload
    assert {"--clear-groups", "--bounding-set=-all", "--inh-caps=-all",
            "--ambient-caps=-all"} <= set(payload)
    assert payload[-2:] == ["/usr/bin/python3", "train.py"]
    assert _pairs(args, "--cap-drop") == ["ALL"]
    assert "--unshare-user" not in args  # its uid map would make the run host root
    assert _pairs(args, "--seccomp") == [str(isolation.SECCOMP_FD)]
    assert "--unshare-net" in args and "--new-session" in args
    assert "/" not in _pairs(args, "--ro-bind")  # not the host root


def test_user_engine_uses_a_user_namespace_without_further_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolation, "privileged", lambda: False)
    args = isolation.command(_spec(tmp_path))
    assert "--unshare-user" in args and "--disable-userns" in args
    assert "setpriv" not in " ".join(args) and "--cap-add" not in args


def test_gpu_run_binds_its_nodes_and_the_sys_parts_cuda_reads(tmp_path: Path) -> None:
    nodes = ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    args = isolation.command(_spec(tmp_path, devices=nodes, run_uid=isolation.RUN_UID_BASE))
    assert _pairs(args, "--dev-bind") == nodes
    bound = _pairs(args, "--ro-bind")
    gpu_sys = [p for p in isolation.SYS_GPU if Path(p).is_dir()]
    assert set(gpu_sys) <= set(bound)
    cpu_only = isolation.command(_spec(tmp_path, run_uid=isolation.RUN_UID_BASE))
    assert not set(gpu_sys) & set(_pairs(cpu_only, "--ro-bind"))
    assert "/sys/class" not in bound  # no host interfaces listed


def test_gpu_runs_get_no_address_space_limit() -> None:
    assert limits.address_space_mb(gpu_run=True, asked_mb=4096) == 0
    assert limits.address_space_mb(gpu_run=False, asked_mb=4096) == 4096
    assert limits.address_space_mb(gpu_run=False, asked_mb=0) == 0


def test_mount_point_parents_are_made_crossable(tmp_path: Path) -> None:
    args = isolation.command(_spec(tmp_path, run_uid=isolation.RUN_UID_BASE))
    made = _pairs(args, "--dir")
    work = tmp_path / "work"
    assert str(work.parent) in made  # a 0755 folder, not bwrap's 0700
    assert args.index(str(work.parent)) < args.index(str(work))


def test_the_filter_denies_what_it_says() -> None:
    program = syscall_filter.program()
    assert program and len(program) % 8 == 0  # classic BPF: 8-byte instructions
    assert {"mount", "umount2", "setns", "unshare", "bpf", "keyctl", "perf_event_open",
            "open_by_handle_at", "kexec_load", "pivot_root"} <= set(syscall_filter.DENIED)
