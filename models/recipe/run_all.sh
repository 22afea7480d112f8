#!/usr/bin/env bash
# Rebuilds the default model from scratch: corpus, tokenizer, training, evaluation.
# Needs: pip install torch transformers tokenizers numpy  (CPU is enough; ~30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")"
python prepare_corpus.py data
python train_tokenizer.py data tokenizer
python train_model.py --data data --tokenizer tokenizer --out ../stdlib-moe --steps 1600 --log training_log.json
python evaluate.py --model ../stdlib-moe --data data --out evaluation.json
