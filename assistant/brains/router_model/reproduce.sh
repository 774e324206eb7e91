#!/usr/bin/env bash
# Rebuilds this adapter, its report and data card from a clean checkout: generated data, audit_dataset,
# clean_dataset, split_dataset, train_sft, evaluation. The training step alone, in plain TRL, is the
# run's own reproduce.sh (its run dir is named in report.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
exec "${PYTHON:-python}" -m assistant brain build  "$@"
