from kdpipe.cli import run

run()
