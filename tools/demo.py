"""`make demo`: the main job end to end on an embedded default, through the `gluonface` CLI.

Each stage runs one `gluonface` subcommand as a subprocess (its own progress display), in order; a
failing stage stops the demo with its exit status. Later issues append stages (train, eval, export) to
STAGES; a stage is a name plus a function from the demo context to the subcommand's arguments.

    python tools/demo.py --out demo_out [--identities 60 --images-per-id 12]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple


class Stage(NamedTuple):
    name: str
    argv: Callable[[Dict], List[str]]   # context → arguments after `gluonface`
    purpose: str


def _paths(ctx: Dict) -> Dict[str, str]:
    out = ctx["out"]
    return dict(faces=os.path.join(out, "faces"), holdout=os.path.join(out, "faces_holdout"),
                rec=os.path.join(out, "rec", "train"), bin=os.path.join(out, "rec", "holdout.bin"),
                sheet=os.path.join(out, "contact_sheet.png"), pair_sheet=os.path.join(out, "pairs.png"))


STAGES: List[Stage] = [
    Stage("synth", lambda c: ["synth", c["faces"], "--identities", str(c["identities"]),
                              "--images-per-id", str(c["images_per_id"]), "--seed", "0"],
          "procedural training identities with true landmarks"),
    Stage("synth-holdout", lambda c: ["synth", c["holdout"], "--identities", str(max(4, c["identities"] // 3)),
                                      "--images-per-id", str(c["images_per_id"]), "--seed", "1"],
          "held-out identities (another seed) for verification pairs"),
    Stage("pack", lambda c: ["pack", c["faces"], c["rec"]], "training identities → insightface rec"),
    Stage("pairs", lambda c: ["pairs", c["holdout"], c["bin"], "--pairs", str(c["pairs"]), "--seed", "0",
                              "--exclude-identities-of", c["rec"]], "balanced verification pairs (.bin)"),
    Stage("inspect", lambda c: ["inspect", c["rec"], "--grid", c["sheet"]], "counts, integrity, contact sheet"),
    Stage("inspect-pairs", lambda c: ["inspect", c["bin"], "--grid", c["pair_sheet"]], "pair set summary"),
]

# Everything the stages above create; removed first so that a re-run starts clean.
_OWNED = ("faces", "faces_holdout", "rec", "contact_sheet.png", "pairs.png")


def run_stages(stages: List[Stage], ctx: Dict) -> int:
    """Run ``stages`` in order; print each one's banner, output and time. Returns the first failure's
    exit status, or 0."""
    for i, stage in enumerate(stages, 1):
        argv = [sys.executable, "-m", "gluonface"] + stage.argv(ctx)
        print(f"\n== [{i}/{len(stages)}] {stage.name}: {stage.purpose}\n$ gluonface {' '.join(argv[3:])}",
              flush=True)
        start = time.time()
        code = subprocess.call(argv)
        print(f"-- {stage.name}: exit {code}, {time.time() - start:.1f} s", flush=True)
        if code != 0:
            print(f"demo stopped: stage '{stage.name}' failed (exit {code})", file=sys.stderr)
            return code
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--images-per-id", type=int, default=12)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for name in _OWNED:
        target = os.path.join(args.out, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
    ctx = dict(out=args.out, identities=args.identities, images_per_id=args.images_per_id, pairs=args.pairs)
    ctx.update(_paths(ctx))
    code = run_stages(STAGES, ctx)
    if code == 0:
        print(f"\ndemo finished: rec {ctx['rec']}.rec, pairs {ctx['bin']}, contact sheets {ctx['sheet']} "
              f"and {ctx['pair_sheet']}")
    return code


if __name__ == "__main__":
    sys.exit(main())
