"""Train a face-recognition model from a YAML config (single process, kvstore or Horovod worker).

Examples:
  gluonface train configs/tiny_synthetic.yaml
  gluonface train configs/ms1mv3_r50_arcface.yaml --set data.rec=/data/ms1m-retinaface-t1 --set train.devices=gpu:0,1
  gluonface train configs/tiny_synthetic.yaml --resume auto      # continue the newest checkpoint (or start)
  gluonface train configs/tiny_synthetic.yaml --resume runs/tiny_synthetic

Writes the run directory (train.run_dir, default runs/<config name>): config.yaml, checkpoints/, best/,
metrics.jsonl, tb/, curves.png, train.log.
"""


def add_arguments(parser):
    parser.add_argument("config", help="experiment YAML (e.g. configs/tiny_synthetic.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable), e.g. --set optim.lr=0.2")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR|auto",
                        help="continue a run: 'auto' = the newest checkpoint of train.run_dir (a fresh start "
                             "when there is none), or the path of a run directory")


def run(args):
    from gluonface.engine.train import train_config
    train_config(args.config, args.overrides, resume=args.resume)
    return 0
