"""`make demo`: the whole product end to end on an embedded default, through the `gluonface` CLI.

Stages (each one `gluonface` subcommand in a subprocess with its own progress display; rerun any of them
alone with the command it prints):

    synth (raw, unaligned, with true landmarks) → align → pack → inspect → synth + align held-out → pairs
    → launch (parameter servers: scheduler + server + 2 workers) → launch (Horovod, 2 workers)
    → eval → export (symbol, ONNX, INT8) → embed → REPORT.md

    python tools/demo.py --out demo_out [--quick] [--identities N --images-per-id M --epochs E] [--only STAGE ...]

A failing stage stops the demo with its exit status. `--quick` shrinks the data and the schedule (the test
suite runs the demo that way).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, List, NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "tiny_synthetic.yaml")


class Stage(NamedTuple):
    name: str
    argv: Callable[[Dict], List[str]]   # context → arguments after `gluonface`
    purpose: str


def _paths(out: str) -> Dict[str, str]:
    j = lambda *p: os.path.join(out, *p)  # noqa: E731
    return dict(raw=j("faces_raw"), aligned=j("faces_aligned"), holdout_raw=j("faces_holdout_raw"),
                holdout=j("faces_holdout"),
                rec=j("rec", "train"), bin=j("rec", "heldout.bin"), sheet=j("contact_sheet.png"),
                pair_sheet=j("pairs.png"), run_kv=j("runs", "kvstore"), run_hvd=j("runs", "horovod"),
                eval=j("eval"), model=j("exported", "model"), embeddings=j("embeddings.npy"),
                report=j("REPORT.md"))


def _train_sets(c: Dict, run_dir: str) -> List[str]:
    sets = [f"data.rec={c['rec']}", f"eval.bins=[{c['bin']}]", f"train.run_dir={run_dir}",
            f"train.epochs={c['epochs']}", f"data.batch_size={c['batch']}", "train.progress_bar=false",
            "data.num_workers=0"]
    out = []
    for s in sets:
        out += ["--set", s]
    return out


def _launch(engine: str, run_key: str) -> Callable[[Dict], List[str]]:
    def argv(c):
        extra = ["--servers", "1"] if engine == "kvstore" else []
        return ["launch", CONFIG, "--engine", engine, "--workers", "2", *extra, "--timeout", "1200",
                *_train_sets(c, c[run_key])]
    return argv


STAGES: List[Stage] = [
    Stage("synth", lambda c: ["synth", c["raw"], "--raw", "--identities", str(c["identities"]),
                              "--images-per-id", str(c["images_per_id"]), "--seed", "0", "--workers", "2"],
          "unaligned training photos of procedural identities, with their true 5 landmarks"),
    Stage("align", lambda c: ["align", c["raw"], c["aligned"], "--landmarks", os.path.join(c["raw"], "landmarks.tsv"),
                              "--workers", "2"],
          "similarity warp of every photo to the ArcFace 112x112 template"),
    Stage("pack", lambda c: ["pack", c["aligned"], c["rec"], "--workers", "2"], "aligned identities → insightface rec"),
    Stage("inspect", lambda c: ["inspect", c["rec"], "--grid", c["sheet"]], "counts, integrity pass, contact sheet"),
    Stage("synth-holdout", lambda c: ["synth", c["holdout_raw"], "--raw", "--identities", str(c["holdout_ids"]),
                                      "--images-per-id", "10", "--seed", "1", "--workers", "2"],
          "unaligned photos of identities never used in training (another seed)"),
    Stage("align-holdout", lambda c: ["align", c["holdout_raw"], c["holdout"], "--landmarks",
                                      os.path.join(c["holdout_raw"], "landmarks.tsv"), "--workers", "2"],
          "the same alignment for the held-out photos"),
    Stage("pairs", lambda c: ["pairs", c["holdout"], c["bin"], "--pairs", str(c["pairs"]), "--seed", "0",
                              "--exclude-identities-of", c["rec"]], "balanced verification pairs of held-out identities"),
    Stage("inspect-pairs", lambda c: ["inspect", c["bin"], "--grid", c["pair_sheet"]], "pair set summary and sheet"),
    Stage("train-kvstore", _launch("kvstore", "run_kv"),
          "2 workers through parameter servers (scheduler + 1 server + 2 workers)"),
    Stage("train-horovod", _launch("horovod", "run_hvd"), "the same job through Horovod (2 ranks, Gloo)"),
    Stage("eval", lambda c: ["eval", c["run_kv"], "--bin", c["bin"], "--out", c["eval"]],
          "10-fold accuracy, TAR@FAR, AUC, ROC plot"),
    Stage("export", lambda c: ["export", c["run_kv"], c["model"], "--onnx", "--int8", "--calib", c["rec"],
                               "--pairs", c["bin"]], "symbol + params, ONNX and INT8, each checked against training"),
    Stage("embed", lambda c: ["embed", c["holdout"], "--model", c["model"], "--out", c["embeddings"]],
          "embeddings of the held-out faces with the exported model"),
]


def run_stages(stages: List[Stage], ctx: Dict) -> int:
    """Run ``stages`` in order, printing each one's banner, command and time; first failure's status or 0."""
    for i, stage in enumerate(stages, 1):
        argv = [sys.executable, "-m", "gluonface"] + stage.argv(ctx)
        print(f"\n== [{i}/{len(stages)}] {stage.name}: {stage.purpose}\n$ gluonface {' '.join(argv[3:])}",
              flush=True)
        start = time.time()
        code = subprocess.call(argv)
        ctx["times"][stage.name] = time.time() - start
        print(f"-- {stage.name}: exit {code}, {ctx['times'][stage.name]:.1f} s", flush=True)
        if code != 0:
            print(f"demo stopped: stage '{stage.name}' failed (exit {code})", file=sys.stderr)
            return code
    return 0


def _run_summary(run_dir: str) -> Dict:
    """Steps, global batch, images/s and last verification of a run directory."""
    import yaml
    cfg = yaml.safe_load(open(os.path.join(run_dir, "config.yaml"), encoding="utf-8"))
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    verify = [r for r in rows if r.get("kind") == "verify"]
    derived = cfg.get("derived", {})
    out = {"steps": train[-1]["step"] if train else 0, "global_batch": derived.get("global_batch"),
           "final_loss": train[-1]["loss"] if train else None,
           "accuracy": verify[-1]["accuracy"] if verify else None, "model": cfg["model"]["name"],
           "loss": cfg["loss"]["name"]}
    if len(train) >= 2 and out["global_batch"]:
        dt = train[-1]["time"] - train[0]["time"]
        out["images_per_s"] = (train[-1]["step"] - train[0]["step"]) * out["global_batch"] / dt if dt > 0 else None
    return out


def write_report(ctx: Dict) -> str:
    """REPORT.md: what was trained, on what, how well, how fast, and where each artefact is."""
    kv, hvd = _run_summary(ctx["run_kv"]), _run_summary(ctx["run_hvd"])
    ev = json.load(open(os.path.join(ctx["eval"], "eval.json"), encoding="utf-8"))
    ver = next(iter(ev["verification"].values()))
    meta = json.load(open(os.path.join(os.path.dirname(ctx["model"]), "export.json"), encoding="utf-8"))
    exp_ver = meta.get("verification") or {}
    speed = meta.get("checks", {}).get("speed_images_per_s", {})
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rate = lambda v: "n/a" if not v else f"{v:.0f}"  # noqa: E731
    rel = lambda p: os.path.relpath(p, ctx["out"])  # noqa: E731
    tar = ", ".join(f"{float(k):g}: {pct(v)}" for k, v in ver.get("tar_at_far", {}).items() if v is not None)
    lines = [
        "# gluonface demo report", "",
        f"Data: {ctx['identities']} synthetic identities × {ctx['images_per_id']} unaligned photos, aligned from "
        f"their landmarks and packed into `{rel(ctx['rec'])}.rec`; verification on {ctx['pairs']} pairs of "
        f"{ctx['holdout_ids']} held-out identities (`{rel(ctx['bin'])}`).",
        f"Model: `{kv['model']}` with `{kv['loss']}` loss (`configs/tiny_synthetic.yaml`), 2 workers, global batch "
        f"{kv['global_batch']}.", "",
        "| run | steps | final loss | held-out accuracy | images/s (global) | wall time |", "|---|---|---|---|---|---|",
        f"| parameter servers (`{rel(ctx['run_kv'])}`) | {kv['steps']} | {kv['final_loss']:.3f} | {pct(kv['accuracy'])} "
        f"| {rate(kv.get('images_per_s'))} | {ctx['times'].get('train-kvstore', 0):.0f} s |",
        f"| Horovod (`{rel(ctx['run_hvd'])}`) | {hvd['steps']} | {hvd['final_loss']:.3f} | {pct(hvd['accuracy'])} "
        f"| {rate(hvd.get('images_per_s'))} | {ctx['times'].get('train-horovod', 0):.0f} s |", "",
        f"Evaluation of the parameter-server model (`gluonface eval`): accuracy {pct(ver['accuracy'])} ± "
        f"{pct(ver['accuracy_std'])} (10 folds), AUC {ver['auc']:.4f}, TAR@FAR {tar or 'n/a'}; ROC plot "
        f"`{rel(os.path.join(ctx['eval'], 'roc.png'))}`.", "",
        "Export (`gluonface export`):", "",
        "| form | files | held-out accuracy |", "|---|---|---|",
    ]
    files = meta.get("files", {})
    for kind, keys in (("symbol", ("symbol", "params")), ("onnx", ("onnx",)), ("int8", ("int8_symbol", "int8_params"))):
        names = ", ".join(f"`exported/{files[k]}`" for k in keys if k in files)
        lines.append(f"| {kind} | {names} | {pct((exp_ver.get(kind) or {}).get('accuracy'))} |")
    if speed:
        lines += ["", f"INT8 vs float32 symbol throughput (batch {speed.get('batch_size')}): "
                      f"{speed.get('int8', 0):.0f} vs {speed.get('symbol_fp32', 0):.0f} images/s "
                      f"({speed.get('int8_speedup', 0):.2f}×); accuracy drop "
                      f"{exp_ver.get('int8_accuracy_drop_points', float('nan')):.2f} points."]
    lines += ["", f"Embeddings of the held-out faces: `{rel(ctx['embeddings'])}` (paths in "
                  f"`{rel(os.path.splitext(ctx['embeddings'])[0])}.txt`).",
              f"Contact sheets: `{rel(ctx['sheet'])}`, `{rel(ctx['pair_sheet'])}`; training curves: "
              f"`{rel(os.path.join(ctx['run_kv'], 'curves.png'))}`.", "",
              "Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in ctx["times"].items()) + "."]
    with open(ctx["report"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return ctx["report"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--quick", action="store_true", help="small data and one epoch (what the tests run)")
    parser.add_argument("--identities", type=int, help="training identities (default 200; --quick 40)")
    parser.add_argument("--images-per-id", type=int, help="photos per training identity (default 10; --quick 6)")
    parser.add_argument("--epochs", type=float, help="training epochs (default 3; --quick 2)")
    parser.add_argument("--only", nargs="*", metavar="STAGE", help="run only these stages (earlier outputs must exist): "
                        + ", ".join(s.name for s in STAGES))
    args = parser.parse_args(argv)
    # 2 workers x 32 images = the global batch of 64 that configs/tiny_synthetic.yaml is tuned for.
    ctx = dict(out=args.out, times={}, identities=200, images_per_id=10, holdout_ids=40, pairs=400, epochs=3,
               batch=32)
    if args.quick:
        ctx.update(identities=40, images_per_id=6, holdout_ids=12, pairs=120, epochs=2)
    for key in ("identities", "images_per_id", "epochs"):
        if getattr(args, key) is not None:
            ctx[key] = getattr(args, key)
    ctx.update(_paths(args.out))
    stages = [s for s in STAGES if not args.only or s.name in args.only]
    if not args.only:   # a full run starts clean
        shutil.rmtree(args.out, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    code = run_stages(stages, ctx)
    if code == 0 and not args.only:
        print(f"\ndemo finished in {time.time() - start:.0f} s; report: {write_report(ctx)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
