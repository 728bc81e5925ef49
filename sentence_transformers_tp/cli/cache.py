"""``st-tp cache``: list and clear the local cache of dequantized GGUF backbones."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``cache`` subcommand."""
    parser = subparsers.add_parser(
        "cache",
        help="list or clear the local cache of dequantized GGUF backbones",
        description="The cache ($ST_TP_CACHE_DIR, default ~/.cache/sentence_transformers_tp) holds one dequantized "
        "checkpoint per GGUF file content, shared by every virtual environment. 'st-tp cache' (or 'st-tp cache "
        "list') lists the entries with their size and state: ok, damaged (a file truncated, missing or changed since "
        "its build: rebuilt from its GGUF file on next use) or unverified (built by an older version without a "
        "manifest: checked and recorded on next use); sizes are checked, --verify also hashes every file (about 1 s "
        "per 500 MB). 'st-tp cache clear NAME ...' removes entries (by entry name, backbone or GGUF file name) and "
        "'st-tp cache clear --all' removes everything. A removed backbone is converted again on its next use.",
    )
    parser.add_argument("action", nargs="?", choices=["list", "clear"], default="list", help="default: list")
    parser.add_argument("names", nargs="*", metavar="NAME", help="clear: the entries to remove")
    parser.add_argument("--all", action="store_true", help="clear: remove every entry")
    parser.add_argument(
        "--verify", action="store_true", help="list: hash every file of every checkpoint (slow) instead of sizes"
    )
    parser.add_argument("--cache-dir", help="the cache folder (default: $ST_TP_CACHE_DIR or the user cache)")
    parser.set_defaults(func=run)


def _megabytes(size: int) -> str:
    """A byte count as megabytes."""
    return f"{size / 2**20:,.1f} MB"


def run(args: argparse.Namespace) -> int:
    """List or clear the cache."""
    from sentence_transformers_tp.cache_store import clear_cache, default_cache_dir, list_cache

    root = args.cache_dir or default_cache_dir()
    if args.action == "list":
        if args.names or args.all:
            raise ValueError("names and --all belong to 'st-tp cache clear'")
        entries = list_cache(root, verify=args.verify)
        print(f"Cache {root}: {len(entries)} entries, {_megabytes(sum(entry.size for entry in entries))}")
        for entry in entries:
            state = f"{entry.status} ({entry.problem})" if entry.status == "damaged" else entry.status
            print(
                f"  {_megabytes(entry.size):>12}  {entry.kind:10s}  {state:10s}  {entry.name}  {entry.source}".rstrip()
            )
        damaged = [entry.name for entry in entries if entry.status == "damaged"]
        if damaged:
            print(
                f"{len(damaged)} damaged: rebuilt from its GGUF file on next use (if that is still there), or remove "
                f"with 'st-tp cache clear {' '.join(damaged)}'"
            )
        unverified = sum(entry.status == "unverified" for entry in entries)
        if unverified:
            print(
                f"{unverified} unverified: built by an older version without a manifest; checked and recorded on next use"
            )
        return 0
    if args.verify:
        raise ValueError("--verify belongs to 'st-tp cache list'")
    if not args.names and not args.all:
        raise ValueError("name the entries to clear (see 'st-tp cache list'), or pass --all to clear everything")
    if args.names and args.all:
        raise ValueError("give entry names or --all, not both")
    removed = clear_cache(root, None if args.all else args.names)
    print(f"Removed {len(removed)} entries ({_megabytes(sum(entry.size for entry in removed))}) from {root}")
    return 0
