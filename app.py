"""Entry point for `python app.py` and Hugging Face Spaces: serve the fm_multi playground.

Options (see `python app.py --help`): --checkpoint (or $FM_CHECKPOINT), --host/--port (or
$GRADIO_SERVER_NAME/$GRADIO_SERVER_PORT), --share, --max-file-size, --concurrency, --queue-size.
`fm-multi serve` takes the same options and runs the same code, fm_multi.ui.app.serve.
"""
import sys

from fm_multi.ui.app import main

if __name__ == "__main__":
    sys.exit(main())
