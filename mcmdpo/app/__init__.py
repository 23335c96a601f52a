"""Try checkpoints in the browser: ``python -m mcmdpo.app --model CKPT [--model CKPT ...]``.

- :mod:`mcmdpo.app.engine`: the model side, free of web code (load as inference loads, generate,
  score an alt-text and its image and context margins with the preference evaluation's code);
- :mod:`mcmdpo.app.uploads`: what a request may hold (the image, the texts) and the messages
  that refuse the rest;
- :mod:`mcmdpo.app.examples`: the examples the page offers (synthetic records, or a data file's);
- :mod:`mcmdpo.app.page`: the Gradio page;
- :mod:`mcmdpo.app.__main__`: the command line.
"""
