#!/usr/bin/env bash
# Multi-node U-SAM training with DeepSpeed.
#
# Mode 1, from the master node, through ssh/pdsh (DeepSpeed's launcher starts every rank):
#     scripts/launch_multinode.sh HOSTFILE --config configs/train/stage1.yaml [key=value ...] [--resume]
# Mode 2, without ssh: run the same command on EVERY node with NODE_RANK set (0 on the master) and the same
# HOSTFILE; each node starts its own GPUs with torchrun:
#     NODE_RANK=1 scripts/launch_multinode.sh HOSTFILE --config configs/train/stage1.yaml
#
# Environment (all optional):
#   MASTER_ADDR   address of the master node (default: the first host of HOSTFILE)
#   MASTER_PORT   a free TCP port on the master (default 29500)
#   NODE_RANK     set => mode 2 (torchrun on this node only)
#   GPUS_PER_NODE default: the slots of this node's line in HOSTFILE
#   NCCL_SOCKET_IFNAME / NCCL_IB_HCA   the network interface / InfiniBand adapters NCCL should use
#   TORCH_EXTENSIONS_DIR   where DeepSpeed JIT-builds its ops (a per-node local folder is safest)
set -euo pipefail

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
HOSTFILE="$1"; shift
[[ -f "$HOSTFILE" ]] || { echo "launch_multinode.sh: hostfile $HOSTFILE not found" >&2; exit 2; }
cd "$(dirname "$0")/.."

hosts=($(grep -v '^\s*#' "$HOSTFILE" | awk 'NF {print $1}'))
slots=($(grep -v '^\s*#' "$HOSTFILE" | awk 'NF {split($2, a, "="); print a[2]}'))
NNODES=${#hosts[@]}
[[ $NNODES -ge 1 ]] || { echo "launch_multinode.sh: no host in $HOSTFILE" >&2; exit 2; }
MASTER_ADDR="${MASTER_ADDR:-${hosts[0]}}"
MASTER_PORT="${MASTER_PORT:-29500}"
export MASTER_ADDR MASTER_PORT

if [[ -n "${NODE_RANK:-}" ]]; then
    GPUS_PER_NODE="${GPUS_PER_NODE:-${slots[$NODE_RANK]}}"
    echo "node $NODE_RANK of $NNODES: $GPUS_PER_NODE processes, master $MASTER_ADDR:$MASTER_PORT"
    exec torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$GPUS_PER_NODE" \
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" train/train.py "$@"
fi

echo "$NNODES nodes from $HOSTFILE, master $MASTER_ADDR:$MASTER_PORT"
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
    train/train.py "$@"
