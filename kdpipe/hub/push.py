"""`--push-to-hub REPO`: upload a folder kdpipe wrote (a run directory, an exported dataset)
to a Hub repository with huggingface_hub.

The token is whatever huggingface_hub finds itself (HF_TOKEN, or the one `hf auth login`
stored); kdpipe never reads it into a file, a card, a log line or a .meta.json. HF_ENDPOINT
points the upload at another Hub (a mirror, a local stand-in).
"""

from __future__ import annotations

import re
from pathlib import Path

from kdpipe.errors import KdpipeError

NO_TOKEN = "no Hub token; set HF_TOKEN or run `hf auth login`"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def repo_problem(flag: str, repo: str | None) -> str | None:
    """A repository id that is not owner/name, as a message; else None."""
    if repo is not None and not _REPO_ID.match(repo):
        return f"{flag} must be a Hub repository id owner/name, got {repo!r}"
    return None


def push_folder(folder: str | Path, repo_id: str, repo_type: str, *, private: bool = False,
                skip: tuple[str, ...] = (), message: str = "Upload from kdpipe") -> str:
    """Create the repository when missing and upload `folder` (less its top-level entries named in
    `skip`) as one commit; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    api = HfApi(library_name="kdpipe")
    folder = Path(folder)
    # One commit of every file (large ones go through the Hub's LFS/Xet upload inside create_commit).
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in skip)
    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p)) for p in files]
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private or None, exist_ok=True)
        info = api.create_commit(repo_id=repo_id, repo_type=repo_type, operations=ops, commit_message=message)
    except LocalTokenNotFoundError:
        raise KdpipeError(f"--push-to-hub {repo_id}: {NO_TOKEN}") from None
    except OfflineModeIsEnabled:
        raise KdpipeError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE=1 forbids uploads; unset it to push") from None
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        refused = "the token was refused" if get_token() else NO_TOKEN
        why = {401: refused, 403: "the token may not write to it"}.get(status, str(e).split("\n")[0])
        raise KdpipeError(f"--push-to-hub {repo_id}: {why}") from None
    except ValueError as e:  # the Hub refused the card's metadata (huggingface_hub checks it before committing)
        raise KdpipeError(f"--push-to-hub {repo_id}: {' '.join(str(e).split())}") from None
    except _network_errors() as e:
        raise KdpipeError(f"--push-to-hub {repo_id}: the Hub cannot be reached ({type(e).__name__})") from None
    return str(getattr(info, "commit_url", info))


def _network_errors() -> tuple[type[BaseException], ...]:
    """No network: OSError, or the transport errors of the HTTP client huggingface_hub uses."""
    try:
        import httpx2

        return (OSError, httpx2.TransportError)
    except ImportError:
        return (OSError,)
