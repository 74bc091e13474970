"""`doorbell-tus-server`: a reference tus 1.0 upload server for an agency.

tuspyserver's FastAPI router under uvicorn. The demo and the tests run it as a real
server process; an agency can run it to try the loop:

    doorbell-tus-server --storage uploads/ --port 1080

Uploads land in the storage folder as a data file and a JSON `.info` file each (random
names; `doorbell-agency verify --storage DIR` finds a share's two objects by their
metadata). It uses tuspyserver's `LocalFileStorage` backend, which appends a PATCH body
and fsyncs before it advances the stored offset, so a SIGKILL mid-request never leaves
the data longer than the offset it reports. It serves plain HTTP on loopback only: a
production agency puts a conforming server (tusd, @tus/server) behind HTTPS, which the
device requires for any address but loopback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from foundation.cli import EXIT_CODES_EPILOG, ToolParser, run_tool
from foundation.errors import DoorbellError, UsageError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def serve(port: int, storage: str, max_size: int, host: str = "127.0.0.1") -> None:
    # imported here: the server's packages are the `agency` extra, not the device's
    try:
        import uvicorn
        from fastapi import FastAPI
        from tuspyserver import create_tus_router
        from tuspyserver.storage.local import LocalFileStorage
    except ImportError as exc:
        raise DoorbellError(f"{exc.name} is not installed: pip install 'doorbell[agency]'") from exc

    app = FastAPI()
    app.include_router(
        create_tus_router(
            prefix="files",
            files_dir=storage,
            max_size=max_size,
            storage=LocalFileStorage(storage),
        )
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _parser() -> ToolParser:
    parser = ToolParser(
        prog="doorbell-tus-server",
        description="A reference tus 1.0 upload server for an agency (plain HTTP, loopback).",
        epilog=EXIT_CODES_EPILOG,
    )
    parser.add_argument(
        "--storage", required=True, type=Path, help="folder for the uploads (created if missing)"
    )
    parser.add_argument("--port", type=int, default=1080, help="TCP port to listen on")
    parser.add_argument(
        "--host", default="127.0.0.1", choices=LOOPBACK, help="loopback address to listen on"
    )
    parser.add_argument(
        "--max-size", type=int, default=1 << 40, help="largest upload accepted, in bytes"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = _parser().parse_args(argv)
        if not 1 <= args.port <= 65535:
            raise UsageError(f"--port: {args.port} is not a port from 1 to 65535")
        if args.max_size < 1:
            raise UsageError("--max-size: must be at least 1 byte")
        try:
            args.storage.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DoorbellError(f"cannot create {args.storage}: {exc.strerror}") from exc
        print(
            f"doorbell-tus-server: uploads to http://{args.host}:{args.port}/files/ "
            f"are stored in {args.storage}",
            flush=True,
        )
        serve(args.port, str(args.storage), args.max_size, args.host)
        return 0

    return run_tool("doorbell-tus-server", body)


if __name__ == "__main__":
    sys.exit(main())
