"""hitok.cli — the command line face of hitok (installed from the repo's ``hitok_cli/`` folder).

It imports the inference library ``hitok`` (upscaling, image I/O, tiling, model lookup), and hitok.train /
hitok.bench only inside ``hitok train`` / ``hitok eval``; nothing else imports it.

app.py          Typer commands (thin: parse, call a library function, report with Rich; batch: hitok.batch)
entry.py        the ``hitok`` executable: Ctrl-C during start-up is one line and exit 130
train_cmd.py    ``hitok train``: stages, export, campaign (hitok.train)
eval_cmd.py     ``hitok eval``: the benchmark table (hitok.bench.evaluate)
errors.py       UserError -> one line on stderr, exit code; --debug for tracebacks; SIGTERM as Ctrl-C; usage
                errors in one line
"""
