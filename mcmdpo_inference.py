"""Upstream-compatible front: ``python mcmdpo_inference.py --model_name CKPT --test_datasets FILE
--eval_output OUT``. See ``mcmdpo/eval/inference.py`` for every flag."""

from mcmdpo.eval.inference import main_exit

if __name__ == "__main__":
    main_exit()
