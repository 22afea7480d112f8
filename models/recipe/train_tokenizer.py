"""Step 2: train a byte-level BPE tokenizer (GPT-2 / Qwen style) on the training
split with the `tokenizers` package and save it in Hugging Face's format, then
encode both splits to uint16 token files for training."""
import os, sys, json
import numpy as np
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
from transformers import PreTrainedTokenizerFast

VOCAB = 4096
EOT = "<|endoftext|>"

def main(data="data", out="tokenizer"):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    train_text = open(os.path.join(data, "train.txt"), encoding="utf-8").read()
    docs = train_text.split(EOT)
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT,
                                   unk_token=None, pad_token=EOT)
    fast.model_max_length = 1024
    fast.save_pretrained(out)
    eot_id = tok.token_to_id(EOT)
    for split in ("train", "val"):
        text = open(os.path.join(data, split + ".txt"), encoding="utf-8").read()
        ids = []
        for doc in text.split(EOT):
            if doc:
                ids.extend(tok.encode(doc).ids)
                ids.append(eot_id)
        arr = np.array(ids, dtype=np.uint16)
        arr.tofile(os.path.join(data, split + ".bin"))
        print(split, "tokens", len(arr), "bytes/token", round(len(text.encode()) / len(arr), 3))

if __name__ == "__main__":
    main(*sys.argv[1:])
