"""A reference tus 1.0 upload server for an agency: tuspyserver's FastAPI router under
uvicorn, listening on loopback. The demo and the tests run it as a real server process:

    python -m cloud.tus_server PORT STORAGE_DIR MAX_SIZE

It uses tuspyserver's `LocalFileStorage` backend, which appends a PATCH body and fsyncs
before it advances the stored offset, so a SIGKILL mid-request never leaves the data
longer than the offset it reports. A production agency would run tusd or @tus/server over
object storage; any conforming server works.
"""

from __future__ import annotations

import sys


def serve(port: int, storage: str, max_size: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from tuspyserver import create_tus_router
    from tuspyserver.storage.local import LocalFileStorage

    app = FastAPI()
    app.include_router(
        create_tus_router(
            prefix="files",
            files_dir=storage,
            max_size=max_size,
            storage=LocalFileStorage(storage),
        )
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
