"""Step 1: build the corpus from the running interpreter's standard library.

Corpus: every `*.py` file under `sysconfig.get_paths()["stdlib"]` except
`site-packages` (third-party code with other licenses) and files that are not
valid UTF-8. The Python standard library is distributed under the PSF License
Agreement, which permits use and derivative works. Files are sorted by path;
a file goes to the validation split when crc32(relative path) % 50 == 0 (~2%).

Writes data/train.txt and data/val.txt, files separated by the end-of-text
marker so the model learns file boundaries.
"""
import os, sys, sysconfig, zlib, json

EOT = "<|endoftext|>"

def main(out_dir="data"):
    root = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for f in sorted(filenames):
            if f.endswith(".py"):
                files.append(os.path.join(dirpath, f))
    files.sort()
    os.makedirs(out_dir, exist_ok=True)
    stats = {"stdlib": root, "python": sys.version.split()[0], "train_files": 0, "val_files": 0,
             "train_bytes": 0, "val_bytes": 0, "skipped_not_utf8": 0}
    with open(os.path.join(out_dir, "train.txt"), "w", encoding="utf-8") as tr, \
         open(os.path.join(out_dir, "val.txt"), "w", encoding="utf-8") as va:
        for path in files:
            rel = os.path.relpath(path, root)
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                stats["skipped_not_utf8"] += 1
                continue
            if EOT in text:
                text = text.replace(EOT, "")
            split = "val" if zlib.crc32(rel.encode()) % 50 == 0 else "train"
            (va if split == "val" else tr).write(text + EOT)
            stats[split + "_files"] += 1
            stats[split + "_bytes"] += len(text.encode())
    json.dump(stats, open(os.path.join(out_dir, "corpus_stats.json"), "w"), indent=1)
    print(json.dumps(stats, indent=1))

if __name__ == "__main__":
    main(*sys.argv[1:])
