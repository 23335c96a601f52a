"""Upstream-compatible front: ``python get_score.py --file OUT``. See ``mcmdpo/eval/scoring.py``."""

from mcmdpo.eval.scoring import main_exit

if __name__ == "__main__":
    main_exit()
