"""The chart's model download (init container): a Hugging Face Hub repository into a folder, once.

`hf://<org>/<name>` at `--revision`, with HF_TOKEN from the pod's Secret. A `.complete` marker makes a
restarted container skip a finished download; an interrupted one resumes (the hub client keeps partial files).
Usage: python deploy/fetch_model.py hf://Qwen/Qwen2.5-VL-7B-Instruct /models/base --revision main
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="download a Hugging Face model into a folder, once")
    p.add_argument("source", help="hf://<org>/<name>")
    p.add_argument("dest", type=Path)
    p.add_argument("--revision", default="main", help="branch, tag or commit")
    args = p.parse_args(argv)
    if not args.source.startswith("hf://") or args.source.count("/") != 3:
        print(f"source {args.source!r} is not hf://<org>/<name>", file=sys.stderr)
        return 2
    marker = args.dest / ".complete"
    if marker.exists():
        print(f"{args.dest}: already downloaded ({marker.read_text().strip()})")
        return 0
    from huggingface_hub import snapshot_download

    repo = args.source.removeprefix("hf://")
    path = snapshot_download(repo, revision=args.revision, local_dir=args.dest)
    marker.write_text(f"{repo}@{args.revision}\n")
    print(f"{repo}@{args.revision} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
