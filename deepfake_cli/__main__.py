from deepfake_cli.cli import app

app(prog_name="dfd")
