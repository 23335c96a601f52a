"""Upstream-compatible front: ``python get_score.py --file OUT``. See ``mcmdpo/eval/score_cli.py``."""

from mcmdpo.eval.score_cli import main_exit

if __name__ == "__main__":
    main_exit()
