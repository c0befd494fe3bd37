"""`kdpipe train` started by a launcher (`torchrun`, `accelerate launch`): which process this is, how many
there are, the CPU case the launchers leave to the script, and the launches kdpipe refuses.

Every process runs the whole of `run_train`; each trains on its own share of every global batch
(`--batch-size` rows per process) and DDP averages the gradients. Only the main process (RANK 0) writes
the run directory.

On a machine without CUDA, transformers asks accelerate for a process group only when told to use the
CPU (`use_cpu`); without it each process of `torchrun --nproc_per_node 2` trains alone, a world of one,
and two runs race for one directory. `use_cpu` below turns the gloo process group on for launched runs.

`accelerate launch --cpu --num_processes N` (accelerate 1.15) starts ONE process whatever N says: `--cpu`
selects its simple launcher, which runs the script once (several CPU processes only through MPI,
`--mpirun_hostfile`); it sets MASTER_ADDR for the N processes it does not start. `check_launch` refuses
that case with the commands that do start N processes.
"""

from __future__ import annotations

import os

from kdpipe.errors import UsageError

# The commands the README documents for N processes on one machine (CPU: gloo; GPUs: nccl).
TORCHRUN = "torchrun --nproc_per_node N -m kdpipe train ..."
ACCELERATE = "accelerate launch --multi_gpu --num_processes N -m kdpipe train ..."
_MPI_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def world_size() -> int:
    """How many processes the launcher started (1 when run directly)."""
    for name in ("WORLD_SIZE", *_MPI_SIZES):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def main_process() -> bool:
    """The process that checks, clears and writes RUN_DIR: global rank 0 (the only one when run directly)."""
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) == 0
    return True


def use_cpu(cuda: bool) -> bool:
    """Whether to ask transformers for CPU training explicitly: launched on a machine without CUDA
    (one process alone trains on the CPU either way, and on Apple's MPS when it has one)."""
    return not cuda and world_size() > 1


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def local_cuda_device() -> str:
    """This process's GPU: one per process under a launcher (LOCAL_RANK), read before accelerate sets it, for
    a 4-bit student that must be placed when loaded (bitsandbytes would put every process's on cuda:0)."""
    rank = os.environ.get("LOCAL_RANK", "")
    return f"cuda:{int(rank) if rank.isdigit() else 0}"


def check_launch(teacher_model: bool = False, qlora: bool = False) -> None:
    """Refuse a launch that asked for several processes and got one (accelerate's --cpu); a teacher
    checkpoint under DeepSpeed ZeRO-3, where transformers refuses the whole teacher kdpipe places on each
    process (a model loaded with a device map); and --qlora under FSDP or ZeRO-3, which shard only 4-bit
    weights stored in the compute dtype (bnb_4bit_quant_storage), not kdpipe's."""
    env = os.environ
    zero3 = _flag("ACCELERATE_USE_DEEPSPEED") and env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if qlora and (zero3 or _flag("ACCELERATE_USE_FSDP")):
        raise UsageError("--qlora runs on one GPU or under data parallel (configs/ddp.yaml), not under FSDP or "
                         "DeepSpeed ZeRO-3; use --full or LoRA (without --qlora) to shard the student")
    if teacher_model and zero3:
        raise UsageError("--teacher-model cannot run under DeepSpeed ZeRO-3 (kdpipe puts a whole frozen teacher on "
                         "each process, which ZeRO-3 does not allow): launch with configs/ddp.yaml or "
                         "configs/fsdp.yaml, or a ZeRO stage below 3")
    if _flag("ACCELERATE_USE_CPU") and env.get("MASTER_ADDR") and world_size() == 1 and "RANK" not in env:
        raise UsageError("`accelerate launch --cpu --num_processes N` starts one process, not N (accelerate's --cpu "
                         "runs the script once; several CPU processes only through MPI): for N processes on "
                         f"this machine use `{ACCELERATE}` (gloo when there is no GPU) or `{TORCHRUN}`")


def sharding_note(distributed_type: str) -> str | None:
    """A note when the accelerate config asked for FSDP or DeepSpeed and the run is plain data parallel
    (transformers trains on CPUs as DDP over gloo whatever the config says)."""
    asked = "FSDP" if _flag("ACCELERATE_USE_FSDP") else "DeepSpeed" if _flag("ACCELERATE_USE_DEEPSPEED") else None
    if asked and asked.upper() not in distributed_type.upper():
        return (f"the accelerate config asks for {asked} but this run is {distributed_type} (no GPU): the student was "
                "not sharded, each process held all of it")
    return None
