"""Generate tokenizer fixtures and the ids Hugging Face `tokenizers` produces
for a test corpus (Tests/SwitchyardModelTests/Fixtures/tokenizers).

Three small tokenizers are trained on the repository's own sources so the
fixtures stay small, each in the layout of a real model family:
- `bytelevel_gpt2`: ByteLevel pre-tokenizer with the GPT-2 regex (GPT-2, OLMoE);
- `bytelevel_qwen2`: NFC + Split(Qwen2 regex) + ByteLevel(use_regex=false) (Qwen);
- `sentencepiece_bpe`: Llama / Mixtral legacy layout: Prepend+Replace
  normalizer, BPE with byte_fallback and <0xXX> tokens, BOS post-processor,
  Replace/ByteFallback/Fuse/Strip decoder;
- `metaspace_bpe`: the newer SentencePiece layout with a Metaspace
  pre-tokenizer and decoder.
Run once with `pip install tokenizers`; outputs are committed.
"""
import glob, json, os, sys
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors, normalizers, Regex

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/SwitchyardModelTests/Fixtures/tokenizers"
QWEN2_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

def training_text():
    files = sorted(glob.glob("Sources/**/*.swift", recursive=True)) + sorted(glob.glob("tools/**/*.py", recursive=True))
    text = [open(f, encoding="utf-8").read() for f in files]
    text.append("The quick brown fox jumps over the lazy dog. Ünïcödé façade naïve café — “quotes” 日本語のテキスト 中文 😀🚀")
    return text

CORPUS = [
    "Hello world",
    " leading space and  double  spaces",
    "def forward(self, x):\n    return self.proj(x) + 1\n",
    "Numbers: 3.14159, 42, 1,000,000 and 2026-11-21",
    "Ünïcödé façade naïve café — “smart quotes” and ‘apostrophes’",
    "e\u0301 decomposed vs é composed",
    "日本語のテキスト and 中文 mixed with English",
    "emoji 😀🚀👩‍👩‍👧 and symbols ∑∫√ ≤ ≥",
    "tabs\tand\nnewlines\r\nand trailing spaces   ",
    "<|endoftext|>special in the middle<|endoftext|>",
    "don't won't I'M we'll they've she'd",
    "    indented code block\n\n\n\nafter blank lines",
    "a" * 40,
    "",
    " ",
    "x<|endoftext|> y",
    "Ψ ǅ ẞ ﬁ ligature ＡＢＣ fullwidth",
]

def train_bytelevel(kind):
    tok = Tokenizer(models.BPE())
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_text(), trainer=trainer)
    return tok

def train_sentencepiece(metaspace):
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    else:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials + byte_tokens, show_progress=False,
                                  limit_alphabet=120)
    tok.train_from_iterator(training_text(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    # SentencePiece checkpoints list the byte tokens in the vocabulary, not as
    # added tokens; move them there, as Llama's tokenizer.json has them.
    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in specials]
    return Tokenizer.from_str(json.dumps(data))

def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {
        "bytelevel_gpt2": train_bytelevel("gpt2"),
        "bytelevel_qwen2": train_bytelevel("qwen2"),
        "sentencepiece_bpe": train_sentencepiece(False),
        "metaspace_bpe": train_sentencepiece(True),
    }
    for name, tok in cases.items():
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        rows = []
        for text in CORPUS:
            ids = tok.encode(text, add_special_tokens=True).ids
            rows.append({"text": text, "ids": ids,
                         "ids_no_special": tok.encode(text, add_special_tokens=False).ids,
                         "decoded": tok.decode(ids, skip_special_tokens=False),
                         "decoded_skip_special": tok.decode(ids, skip_special_tokens=True)})
        json.dump(rows, open(os.path.join(d, "expected.json"), "w"), ensure_ascii=False, indent=0)
        print(name, os.path.getsize(os.path.join(d, "tokenizer.json")), "bytes")

if __name__ == "__main__":
    main()
